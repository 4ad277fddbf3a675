//! Expanding the main file's `include` globs into files, with bounds (issue 12, finding 8):
//! `include = ["/**/*.x"]` used to walk the whole file system. Called by
//! `crate::settings::load` at `check`, start and every reload.
//!
//! The glob syntax is the `glob` crate's (`*`, `?`, `[…]`, and `**` as a whole component for
//! any number of directories), matched one path component at a time so that only the
//! directories the pattern can reach are read. Bounds:
//! - no `**` below a literal prefix that is the root directory (`/**/…`, `/*/**/…`);
//! - at most [`MAX_DIRS`] directories read, [`MAX_ENTRIES`] directory entries looked at and
//!   [`MAX_FILES`] files matched; past that the pattern is an error, never a partial list.
//!
//! Symlinks are followed, as the `glob` crate does (Kubernetes ConfigMaps are symlinks);
//! a symlink loop ends at the directory bound. Only regular files (after symlinks) match a
//! wildcard; a literal path is returned as it is, so that reading it reports what it is.

use std::path::{Component, Path, PathBuf};

/// Most files one `include` pattern may match.
pub const MAX_FILES: usize = 1_000;
/// Most directories one `include` pattern may read.
pub const MAX_DIRS: usize = 1_000;
/// Most directory entries one `include` pattern may look at.
pub const MAX_ENTRIES: usize = 100_000;

/// The files `pattern` (already joined to the main file's directory) names, sorted. The
/// error completes "<pattern> …".
pub fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    glob::Pattern::new(&text).map_err(|e| format!("is not a glob pattern: {e}"))?;
    let components: Vec<Component<'_>> = pattern.components().collect();
    let first_wild = components
        .iter()
        .position(|c| matches!(c, Component::Normal(s) if is_wild(&s.to_string_lossy())));
    let Some(first_wild) = first_wild else {
        // No wildcard: the path itself, if anything is there.
        return Ok(if std::fs::symlink_metadata(pattern).is_ok() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    };
    let prefix: PathBuf = components[..first_wild].iter().collect();
    let rest: Vec<String> = components[first_wild..]
        .iter()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if rest.iter().any(|c| c == "**") && walks_from_root(&prefix) {
        return Err(
            "has `**` below the root directory: it would walk the whole file system; start it in a directory, e.g. \"/etc/tokend/accounts.d/**/*.toml\"".into(),
        );
    }
    let mut walk = Walk::default();
    walk.visit(&prefix, &rest)?;
    let mut files = walk.files;
    files.sort();
    files.dedup();
    Ok(files)
}

fn is_wild(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// Whether `prefix`, made absolute and with `.`/`..` resolved lexically, is `/`.
fn walks_from_root(prefix: &Path) -> bool {
    let absolute = if prefix.is_absolute() {
        prefix.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(prefix)
    };
    let mut depth = 0usize;
    for c in absolute.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth = depth.saturating_sub(1),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    depth == 0
}

#[derive(Default)]
struct Walk {
    dirs: usize,
    entries: usize,
    files: Vec<PathBuf>,
}

impl Walk {
    /// Matches the components `rest` below `dir` (the empty path is the current directory).
    fn visit(&mut self, dir: &Path, rest: &[String]) -> Result<(), String> {
        self.visit_listed(dir, rest, None)
    }

    /// [`Self::visit`], reusing `listed` (the entries of `dir`) when the caller already read
    /// them, so that `**` reads each directory once.
    fn visit_listed(
        &mut self,
        dir: &Path,
        rest: &[String],
        listed: Option<&[PathBuf]>,
    ) -> Result<(), String> {
        let Some((first, tail)) = rest.split_first() else {
            return Ok(());
        };
        if first == "**" {
            // Zero directories, then one more level with `**` still in front.
            let children = match listed {
                Some(children) => children.to_vec(),
                None => self.children(dir)?,
            };
            self.visit_listed(dir, tail, Some(&children))?;
            for sub in children {
                if sub.is_dir() {
                    self.visit(&sub, rest)?;
                }
            }
            return Ok(());
        }
        if !is_wild(first) {
            let child = dir.join(first);
            return self.found(child, tail);
        }
        let pattern =
            glob::Pattern::new(first).map_err(|e| format!("is not a glob pattern: {e}"))?;
        let children = match listed {
            Some(children) => children.to_vec(),
            None => self.children(dir)?,
        };
        for child in children {
            let name = child.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| pattern.matches(&n)) {
                self.found(child, tail)?;
            }
        }
        Ok(())
    }

    /// `path` matched one component: a file when it was the last, else a directory to enter.
    fn found(&mut self, path: PathBuf, tail: &[String]) -> Result<(), String> {
        if tail.is_empty() {
            if path.is_file() {
                if self.files.len() >= MAX_FILES {
                    return Err(format!(
                        "matches more than {MAX_FILES} files: split the accounts over fewer files or narrow the pattern"
                    ));
                }
                self.files.push(path);
            }
            Ok(())
        } else if path.is_dir() {
            self.visit(&path, tail)
        } else {
            Ok(())
        }
    }

    /// The entries of `dir`, counted against the bounds; an unreadable directory has none
    /// (as with the `glob` crate).
    fn children(&mut self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        self.dirs += 1;
        if self.dirs > MAX_DIRS {
            return Err(format!(
                "reads more than {MAX_DIRS} directories: narrow the pattern"
            ));
        }
        let read_from = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(read_from) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(format!(
                    "looks at more than {MAX_ENTRIES} directory entries: narrow the pattern"
                ));
            }
            out.push(dir.join(entry.file_name()));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_glob_within_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("tokend-include-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "a.toml",
            "b.toml",
            "c.txt",
            "sub/d.toml",
            "sub/deeper/e.toml",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            expand(&dir.join(pattern))
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("*.toml"), ["a.toml", "b.toml"]);
        assert_eq!(names("*/*.toml"), ["sub/d.toml"]);
        assert_eq!(
            names("**/*.toml"),
            ["a.toml", "b.toml", "sub/d.toml", "sub/deeper/e.toml"]
        );
        assert_eq!(names("sub/**/e.toml"), ["sub/deeper/e.toml"]);
        assert_eq!(names("a.toml"), ["a.toml"]);
        assert!(names("missing.toml").is_empty());
        assert!(names("[ab].toml").len() == 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stops_at_the_directory_bound() {
        let dir = std::env::temp_dir().join(format!("tokend-include-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for i in 0..=MAX_DIRS {
            std::fs::create_dir_all(dir.join(format!("d{i}"))).unwrap();
        }
        // MAX_DIRS + 1 subdirectories plus the top one: one too many for `**`, none for `*`.
        let e = expand(&dir.join("**/*.toml")).unwrap_err();
        assert!(e.contains("more than 1000 directories"), "{e}");
        assert!(expand(&dir.join("*.toml")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_recursion_from_the_root() {
        for p in ["/**/*.x", "/*/**/*.x", "/etc/../**/*.x"] {
            let e = expand(Path::new(p)).unwrap_err();
            assert!(e.contains("whole file system"), "{p}: {e}");
        }
        assert!(expand(Path::new("/a**")).unwrap_err().contains("glob"));
    }
}
