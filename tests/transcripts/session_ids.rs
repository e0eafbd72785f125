//! E5, hostile session ids (`../x`, `/etc/passwd`, NUL, 300 bytes, `.`, `..`, empty,
//! Unicode): rejected or encoded injectively into a length-capped safe file name; nothing
//! is written outside the directory.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_paths() {
    let server = TestRedis::start().await.unwrap();
    let tmp = TempDir::new("tx");
    let sentinel = tmp.0.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), b"untouched").unwrap();
    let (store, bg) = open(&tmp.tx(), Some(connect(&server).await), |_| {}).await;

    let long = "x".repeat(300);
    let max = "m".repeat(1024);
    let ids = [
        "../x",
        "../sentinel/keep",
        "/etc/passwd",
        "a\0b",
        long.as_str(),
        max.as_str(),
        ".",
        "..",
        "ünïcödé/日本語/🙂",
        "{tx:abc}:log",
        "}{",
        "*",
        "?",
        "[a-z]",
        "\\",
        "with space\tand\nnewline",
        "CON",
        "Case",
        "case",
    ];
    for id in ids {
        let r = store
            .append(id, Message::new("user", format!("for {id:?}")))
            .await
            .unwrap()
            .record;
        assert_eq!(r.seq, 1, "{id:?} is its own session");
        let h = store.history(id, 10).await.unwrap();
        assert_eq!(h.records, std::slice::from_ref(&r), "{id:?}");
        let (h, _) = until_redis(&store, id, 10).await;
        assert_eq!(h.records, [r], "{id:?} via Redis");
    }
    settle(&bg).await;

    let names: Vec<String> = std::fs::read_dir(tmp.tx())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), ids.len(), "{names:?}");
    for name in &names {
        let hex = name.strip_suffix(".jsonl").unwrap_or_else(|| panic!("{name}"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
    }
    // Next to the transcript dir: only the sentinel, untouched.
    let mut beside: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["sentinel", "tx"]);
    assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 1);
    assert_eq!(std::fs::read(sentinel.join("keep")).unwrap(), b"untouched");
    // Redis keys: every one `{tx:<64 hex>}:log`.
    let Reply::Array(Some(keys)) = server.command(&["KEYS", "*"]).await.unwrap() else {
        panic!("KEYS")
    };
    assert_eq!(keys.len(), ids.len());
    for k in keys {
        let k = k.as_text().unwrap();
        let hex = k
            .strip_prefix("{tx:")
            .and_then(|k| k.strip_suffix("}:log"))
            .unwrap();
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{k}"
        );
    }

    // Empty and over-long ids: refused by every method, before any I/O.
    let too_long = "y".repeat(1025);
    for bad in ["", too_long.as_str()] {
        let e = store.append(bad, Message::new("user", "x")).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::InvalidInput {
                    what: "session id",
                    ..
                }
            ),
            "{e}"
        );
        let e = store.history(bad, 1).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e}");
        let e = store.delete_session(bad).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e}");
    }
    assert_eq!(std::fs::read_dir(tmp.tx()).unwrap().count(), ids.len());
    for id in ids {
        assert!(store.delete_session(id).await.unwrap(), "{id:?}");
    }
    assert_eq!(std::fs::read_dir(tmp.tx()).unwrap().count(), 0);
    eprintln!(
        "E5: {} hostile session ids stored as 64-hex names inside the dir",
        ids.len()
    );
}
