//! Markdown tables for the report.

use std::fmt::Write as _;

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Figures.
    Right,
}

/// A Markdown table: a header row and rows of cells, `|` in cells escaped.
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

impl Table {
    /// A table with these columns.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = (S, Align)>) -> Self {
        Self {
            headers: headers.into_iter().map(|(h, a)| (h.into(), a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty, extra ones dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
        self
    }

    /// The table as GitHub-flavoured Markdown, columns padded to line up in a terminal.
    pub fn render(&self) -> String {
        let cells = |row: &[String]| row.iter().map(|c| escape(c)).collect::<Vec<_>>();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| escape(h)).collect();
        let body: Vec<Vec<String>> = self.rows.iter().map(|r| cells(r)).collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                body.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |row: &[String]| {
            let mut s = String::from("|");
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                match self.headers[i].1 {
                    Align::Left => {
                        let _ = write!(s, " {cell}{} |", " ".repeat(pad));
                    }
                    Align::Right => {
                        let _ = write!(s, " {}{cell} |", " ".repeat(pad));
                    }
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&header);
        out.push('|');
        for (i, (_, align)) in self.headers.iter().enumerate() {
            let dashes = "-".repeat(widths[i] - 1);
            match align {
                Align::Left => {
                    let _ = write!(out, " {dashes}- |");
                }
                Align::Right => {
                    let _ = write!(out, " {dashes}: |");
                }
            }
        }
        out.push('\n');
        for row in &body {
            out.push_str(&line(row));
        }
        out
    }
}

/// The line that opens the README's generated block (anything may follow it on the line).
pub const BLOCK_START: &str = "<!-- bench-report:start";
/// The line that closes it.
pub const BLOCK_END: &str = "<!-- bench-report:end -->";

/// `document` with the text between its `BLOCK_START` and `BLOCK_END` lines (kept)
/// replaced by `block`; an error naming what is missing when the markers are not there
/// once each, in order.
///
/// ```
/// use stayfast_benches::markdown::replace_block;
/// let readme = "# x\n<!-- bench-report:start -->\nold\n<!-- bench-report:end -->\ntail\n";
/// assert_eq!(
///     replace_block(readme, "new\n").unwrap(),
///     "# x\n<!-- bench-report:start -->\nnew\n<!-- bench-report:end -->\ntail\n"
/// );
/// assert!(replace_block("# no markers", "new").is_err());
/// ```
pub fn replace_block(document: &str, block: &str) -> Result<String, String> {
    let start = document
        .match_indices(BLOCK_START)
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    let end = document
        .match_indices(BLOCK_END)
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    let (&[start], &[end]) = (start.as_slice(), end.as_slice()) else {
        return Err(format!(
            "expected one `{BLOCK_START} …` line and one `{BLOCK_END}` line, found {} and {}",
            start.len(),
            end.len()
        ));
    };
    let Some(opened) = document[start..].find('\n').map(|n| start + n + 1) else {
        return Err(format!("nothing after the `{BLOCK_START}` line"));
    };
    if opened > end {
        return Err(format!("`{BLOCK_END}` comes before `{BLOCK_START}`"));
    }
    Ok(format!("{}{block}{}", &document[..opened], &document[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_github_tables() {
        let mut t = Table::new([("client", Align::Left), ("ops/s", Align::Right)]);
        t.row(["raw", "120000"]).row(["a|b", "9"]);
        assert_eq!(
            t.render(),
            "| client |  ops/s |\n\
             | ------ | -----: |\n\
             | raw    | 120000 |\n\
             | a\\|b   |      9 |\n"
        );
    }

    #[test]
    fn short_rows_are_padded() {
        let mut t = Table::new([("a", Align::Left), ("b", Align::Left)]);
        t.row(["x"]);
        assert_eq!(t.render().lines().last(), Some("| x   |     |"));
    }
}
