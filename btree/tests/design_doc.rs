//! docs/DESIGN.md section 3.4 shows the node and overflow header tables exactly as
//! `format::FIELDS` and `format::OVERFLOW_FIELDS` define them, and the limits it names.

use pfnfs_btree::format::{FIELDS, Field, OVERFLOW_FIELDS};
use pfnfs_btree::{INLINE_VALUE_MAX, MAX_KEY, MAX_OVERFLOW_RANGES};

fn design_section(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DESIGN.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- section: {name} ");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("DESIGN.md has no section {name}"));
    let rest = &text[start + marker.len()..];
    let end = rest.find("<!-- section: ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// (offset, size, field) of the table rows whose first two cells are numbers.
fn table(section: &str) -> Vec<(usize, usize, String)> {
    section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<String> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect();
            Some((
                cells.first()?.parse().ok()?,
                cells.get(1)?.parse().ok()?,
                cells.get(2)?.clone(),
            ))
        })
        .collect()
}

fn code(fields: &[Field]) -> Vec<(usize, usize, String)> {
    fields
        .iter()
        .map(|f| (f.offset, f.size, f.name.to_string()))
        .collect()
}

#[test]
fn node_header_table_matches_code() {
    assert_eq!(table(&design_section("btree-node")), code(&FIELDS));
}

#[test]
fn overflow_header_table_matches_code() {
    assert_eq!(
        table(&design_section("btree-overflow")),
        code(&OVERFLOW_FIELDS)
    );
}

#[test]
fn limits_match_code() {
    let text = design_section("btree-node");
    assert!(text.contains(&format!("Keys are 1..={MAX_KEY} bytes")));
    assert!(text.contains(&format!("at most {INLINE_VALUE_MAX} bytes")));
    assert!(text.contains(&format!("1..={MAX_OVERFLOW_RANGES} ranges")));
}
