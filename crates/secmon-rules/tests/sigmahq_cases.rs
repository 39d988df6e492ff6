//! Each case in tests/sigmahq_cases/*.json: the positive event fires the SigmaHQ rule
//! through the field mapping, the negative one does not.

use std::path::{Path, PathBuf};

use secmon_rules::cases::CaseFile;

fn sigma_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/sigma"));
    assert!(root.is_dir(), "SigmaHQ checkout missing at {} (expected ../shared/sigma)", root.display());
    root
}

#[test]
fn sigmahq_rules_fire_on_positive_and_not_on_negative_events() {
    let root = sigma_root();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigmahq_cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut total = 0;
    let mut per_folder = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = vec![];
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        let cases = CaseFile::read(file).unwrap_or_else(|e| panic!("{e}"));
        for case in &cases.cases {
            total += 1;
            let folder =
                case.rule.iter().nth(2).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            *per_folder.entry(folder).or_default() += 1;
            if let Err(e) = case.run(&root) {
                failures.push(e);
            }
        }
    }
    println!("{total} cases: {per_folder:?}");
    assert!(failures.is_empty(), "failing cases:\n{}", failures.join("\n"));
    assert!(total >= 20, "only {total} cases");
    for folder in ["process_creation", "file_event", "network_connection", "builtin"] {
        assert!(per_folder.get(folder).copied().unwrap_or(0) >= 3, "too few {folder} cases");
    }
}
