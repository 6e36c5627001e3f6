//! The write policy for every file a command writes: never over one of its inputs, never
//! through a symbolic link, never onto something that is not a regular file. Checked before
//! any work, so a refused output costs nothing; the writes themselves are atomic (a
//! temporary file renamed into place).

use std::path::Path;

use anyhow::{Result, bail};

/// Refuses `output` when it names one of `inputs` (the same file, by any path), a symbolic
/// link, or an existing thing that is not a regular file (a device, a folder, a pipe).
pub fn check_output(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(output) else {
        return Ok(()); // a new file
    };
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link; outputs are replaced atomically, not written through links: give the link's target or another path",
            output.display()
        );
    }
    if !meta.is_file() {
        bail!(
            "{} exists and is not a regular file (a device, folder or pipe); choose a file path",
            output.display()
        );
    }
    for input in inputs {
        if same_file(output, input) {
            bail!(
                "{} is also an input of this command; choose another output: TNS never writes over its inputs",
                output.display()
            );
        }
    }
    Ok(())
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y || same_inode(&x, &y),
        _ => false,
    }
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}
