//! What every command reads, read the same way: `-f FILE`, `-f DIR` (its `.yaml`, `.yml` and
//! `.json` files in name order; `-R` also those of its subdirectories), `-f -` for standard
//! input; multi-document YAML; and `kind: List` (what `kubectl get -o yaml` prints) unpacked into
//! its items. Each document carries a label (`file#N` for the Nth document, empty documents not
//! counted, or `file#N.I` for item I of a List) that messages name it by.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::CliError;

/// One manifest and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub label: String,
    pub value: Value,
}

impl Document {
    /// `Kind/name` for messages.
    pub fn describe(&self) -> String {
        let kind = self.value.get("kind").and_then(Value::as_str).unwrap_or("<no kind>");
        let name = self.value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<no name>");
        format!("{kind}/{name}")
    }
}

/// The files `paths` stand for, in order: each directory replaced by its manifests (name
/// order), recursively with `recursive`, as `kubectl apply -f DIR [-R]` reads them.
pub fn files(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            directory(path, recursive, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn directory(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CliError::Io { path: dir.to_owned(), source })?;
    let mut entries: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                directory(&path, recursive, out)?;
            }
        } else if path.extension().is_some_and(|ext| ["yaml", "yml", "json"].contains(&&*ext.to_string_lossy())) {
            out.push(path);
        }
    }
    Ok(())
}

/// The text of a file, or of standard input for `-`.
pub fn read(file: &Path) -> Result<String, CliError> {
    let mut text = String::new();
    let result = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|read| text = read)
    };
    result.map(|()| text).map_err(|source| CliError::Io { path: file.to_owned(), source })
}

/// Every document in `text`, Lists unpacked; empty documents skipped. `source` names the file in
/// labels and errors.
pub fn parse(source: &Path, text: &str) -> Result<Vec<Document>, CliError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|error| CliError::Invalid { path: source.to_owned(), message: format!("not valid YAML: {error}") })?;
    let mut documents = Vec::new();
    for (index, value) in values.into_iter().enumerate().filter(|(_, value)| !value.is_null()) {
        let label = format!("{}#{}", source.display(), index + 1);
        match list_items(value) {
            Ok(items) => documents.extend(
                items.into_iter().enumerate().map(|(item, value)| Document { label: format!("{label}.{item}"), value }),
            ),
            Err(value) => documents.push(Document { label, value }),
        }
    }
    Ok(documents)
}

/// The items of a `List` (any kind ending in `List` with `items`), or the document back.
fn list_items(document: Value) -> Result<Vec<Value>, Value> {
    let is_list = document.get("kind").and_then(Value::as_str).is_some_and(|kind| kind.ends_with("List"))
        && document.get("items").is_some_and(Value::is_array);
    match document {
        Value::Object(mut fields) if is_list => match fields.remove("items") {
            Some(Value::Array(items)) => Ok(items),
            _ => Ok(Vec::new()),
        },
        document => Err(document),
    }
}

/// Every document of every file `paths` stand for.
pub fn documents(paths: &[PathBuf], recursive: bool) -> Result<Vec<Document>, CliError> {
    let mut documents = Vec::new();
    for file in files(paths, recursive)? {
        documents.extend(parse(&file, &read(&file)?)?);
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_stands_for_its_manifests_as_with_kubectl() {
        let found =
            files(&[PathBuf::from("examples"), PathBuf::from("crds/stoker.dev_nodepools.yaml")], false).unwrap();
        let names: Vec<String> = found.iter().map(|f| f.display().to_string()).collect();
        assert!(names.contains(&"examples/nodepool-spot.yaml".to_owned()), "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("examples/karpenter")), "not recursive: {names:?}");
        assert_eq!(names.last().map(String::as_str), Some("crds/stoker.dev_nodepools.yaml"));
        let mut sorted = names[..names.len() - 1].to_vec();
        sorted.sort();
        assert_eq!(sorted, names[..names.len() - 1]);
    }

    #[test]
    fn recursion_into_subdirectories_is_asked_for() {
        let deep = files(&[PathBuf::from("examples")], true).unwrap();
        assert!(deep.iter().any(|f| f.starts_with("examples/karpenter")), "{deep:?}");
        assert!(deep.contains(&PathBuf::from("examples/nodepool-spot.yaml")));
    }

    #[test]
    fn lists_are_unpacked_and_every_document_is_labelled() {
        // The empty document between the two markers is not counted.
        let text = "kind: List\nitems:\n- {kind: NodePool, metadata: {name: a}}\n- {kind: NodePool, metadata: {name: b}}\n---\n---\nkind: Pod\nmetadata: {name: c}\n";
        let documents = parse(Path::new("in.yaml"), text).unwrap();
        let labels: Vec<(String, String)> = documents.iter().map(|d| (d.label.clone(), d.describe())).collect();
        assert_eq!(
            labels,
            [
                ("in.yaml#1.0".to_owned(), "NodePool/a".to_owned()),
                ("in.yaml#1.1".to_owned(), "NodePool/b".to_owned()),
                ("in.yaml#2".to_owned(), "Pod/c".to_owned()),
            ]
        );
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let error = parse(Path::new("bad.yaml"), "kind: [unclosed\n").unwrap_err();
        assert!(error.to_string().starts_with("bad.yaml: not valid YAML"), "{error}");
    }
}
