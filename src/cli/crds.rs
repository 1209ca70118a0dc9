//! `stoker crds`: the CRD YAML generated from the Rust types, as committed in `crds/`.

use std::path::Path;

use crate::apis;

/// File name of a CRD in `crds/`, as Karpenter names them: `<group>_<plural>.yaml`.
pub fn file_name(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Every CRD as (file name, YAML).
pub fn render() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    apis::crds().iter().map(|crd| Ok((file_name(crd), crate::yaml::to_string(crd)?))).collect()
}

/// Writes every CRD into `dir`, one file each.
pub fn write_all(dir: &Path) -> Result<(), super::CliError> {
    std::fs::create_dir_all(dir).map_err(|source| super::CliError::Io { path: dir.to_owned(), source })?;
    for (name, yaml) in render()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|source| super::CliError::Io { path, source })?;
    }
    Ok(())
}
