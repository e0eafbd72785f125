//! The README's least-privilege ACL lines (section "Deployments"), as the ACL tests run
//! them.

/// The password the tests give every documented user.
pub(crate) const PASSWORD: &str = "acl-test-Pa55";

/// The README's `ACL SETUSER` lines, split into words, `PASSWORD` replaced: one per
/// store, then `ACL SETUSER default off`.
pub(crate) fn documented_acl_lines() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md");
    let section = readme
        .split("\n## Deployments\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Deployments section");
    let lines: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER "))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.replace("PASSWORD", PASSWORD))
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 5, "four users and `default off`: {lines:?}");
    lines
}

/// One `ACL SETUSER <name> …` holding the union of the stores' documented rights, as
/// the README says a service using every store through one handle needs. (Applying the
/// lines one after the other to one user would not do: each starts with `resetkeys`
/// and `-@all`.)
pub(crate) fn union_of_the_documented_users(name: &str) -> Vec<String> {
    let mut union = vec!["ACL".to_owned(), "SETUSER".to_owned(), name.to_owned()];
    for line in documented_acl_lines().iter().filter(|l| l[2] != "default") {
        for rule in &line[3..] {
            if !union.contains(rule) {
                union.push(rule.clone());
            }
        }
    }
    // The resets come first, so that no right granted before them is taken back.
    let reset = |rule: &str| matches!(rule, "resetkeys" | "resetchannels" | "-@all");
    let (resets, rights): (Vec<String>, Vec<String>) = union.split_off(3).into_iter().partition(|r| reset(r));
    union.extend(resets);
    union.extend(rights);
    union
}
