//! `type = "file"`: the token in a local file, replaced atomically on every refresh
//! (SPEC §3 "Sink formats", §4 "Atomic writes"). Formats: `raw`, `bearer`, `json`, `env`,
//! `template`. Mode (default `0600`), owner and group are applied on every write; with no
//! `owner`/`group` configured, a file that exists keeps its owner and group when root
//! writes it (issue 12: `sudo tokend once` must not make an app's token file `root:root`).
//! The file's directory is opened without following symlinks (`fsutil::open_dir`).

use std::path::PathBuf;
use std::time::SystemTime;

use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{SinkContext, SinkError, TokenDocument, WriteOutcome};
use crate::config::error::Validator;
use crate::fsutil::{
    DirOptions, FileAttrs, NewDirs, SafeDir, file_name, open_dir, parent_dir,
    sweep_stale_temps_once,
};

/// `[[account.sink]] type = "file"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Where the token goes; relative paths are relative to the config file.
    pub path: PathBuf,
    /// `raw` (default), `bearer`, `json`, `env` or `template`.
    #[serde(default)]
    pub format: Option<String>,
    /// Octal mode as a string, e.g. `"0640"`; default `"0600"`.
    #[serde(default)]
    pub mode: Option<toml::Value>,
    /// Owner user name or uid.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group name or gid.
    #[serde(default)]
    pub group: Option<String>,
    /// The key for `format = "env"` (default `TOKEN`).
    #[serde(default)]
    pub env_var: Option<String>,
    /// The template for `format = "template"` (minijinja syntax).
    #[serde(default)]
    pub template: Option<String>,
}

/// How the file's content is produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// The token and a newline.
    Raw,
    /// `Bearer <token>\n`.
    Bearer,
    /// The `json` document and a newline.
    Json,
    /// `KEY=<token>\n`.
    Env(String),
    /// A minijinja template over the `json` document's fields.
    Template(String),
}

/// Temporary files older than this next to a sink are leftovers of a crash.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A built file sink.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    format: Format,
    attrs: FileAttrs,
    /// The file's directory, opened once without following symlinks and kept while it
    /// stays as judged ([`SafeDir::unchanged`]): walking the path from `/` for every write
    /// cost about 35 system calls per refresh (issue 16).
    dir: DirSlot,
}

/// Where a file sink keeps its opened directory (shared with the blocking write).
type DirSlot = std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<SafeDir>>>>;

impl FileSinkConfig {
    /// Validates and builds (no I/O besides user and group look-ups).
    pub fn build(&self, v: &mut Validator<'_>, _ctx: &SinkContext) -> Option<FileSink> {
        let mut ok = true;
        let path = v.base_dir().join(&self.path);
        if let Err(m) = check_path(&self.path, &path) {
            v.error("path", m);
            ok = false;
        }
        let format = match self.format.as_deref().unwrap_or("raw") {
            "raw" => Format::Raw,
            "bearer" => Format::Bearer,
            "json" => Format::Json,
            "env" => {
                let key = self.env_var.clone().unwrap_or_else(|| "TOKEN".into());
                if key.is_empty()
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || key.starts_with(|c: char| c.is_ascii_digit())
                {
                    v.error(
                        "env_var",
                        format!("{key:?} is not a valid environment variable name"),
                    );
                    ok = false;
                }
                Format::Env(key)
            }
            "template" => match &self.template {
                Some(t) => {
                    if let Err(e) = minijinja::Environment::new().template_from_str(t) {
                        v.error("template", format!("invalid template: {e}"));
                        ok = false;
                    }
                    Format::Template(t.clone())
                }
                None => {
                    v.error("template", "format = \"template\" needs a `template`");
                    ok = false;
                    Format::Raw
                }
            },
            other => {
                v.error(
                    "format",
                    format!(
                        "{other:?} is not a format: expected raw, bearer, json, env or template"
                    ),
                );
                ok = false;
                Format::Raw
            }
        };
        if self.env_var.is_some() && !matches!(format, Format::Env(_)) {
            v.error("env_var", "only used with format = \"env\"");
            ok = false;
        }
        if self.template.is_some() && !matches!(format, Format::Template(_)) {
            v.error("template", "only used with format = \"template\"");
            ok = false;
        }
        let mode = match &self.mode {
            None => Some(0o600),
            Some(value) => report(v, "mode", parse_mode(value).and_then(check_mode)),
        };
        let uid = match &self.owner {
            None => Some(None),
            Some(name) => report(v, "owner", lookup_user(name)).map(Some),
        };
        let gid = match &self.group {
            None => Some(None),
            Some(name) => report(v, "group", lookup_group(name)).map(Some),
        };
        let (Some(mode), Some(uid), Some(gid), true) = (mode, uid, gid, ok) else {
            return None;
        };
        Some(FileSink {
            path,
            format,
            attrs: FileAttrs {
                mode,
                uid,
                gid,
                keep_owner: true,
            },
            dir: DirSlot::default(),
        })
    }
}

/// How the file's directory is opened: missing directories are created relative to their
/// opened parent, the last one with search permission for whoever may read the file
/// (0600 → 0700, 0640 → 0750, 0644 → 0755) and the file's group; an existing directory is
/// never changed. A sticky shared directory (`/tmp`) is accepted.
fn dir_options(attrs: FileAttrs) -> DirOptions {
    let read_bits = attrs.mode & 0o444;
    DirOptions {
        create: Some(NewDirs {
            mode: 0o700 | read_bits | (read_bits >> 2),
            gid: attrs.gid,
        }),
        shared_ok: true,
        must_own: false,
    }
}

/// Writes `content` to `path`: its directory opened without following symlinks (issue 12,
/// finding 5) and kept in `slot` while it is unchanged, the file replaced atomically
/// relative to it.
fn write_file(
    slot: &DirSlot,
    path: &std::path::Path,
    content: &[u8],
    attrs: FileAttrs,
) -> std::io::Result<()> {
    let name = file_name(path)?;
    let kept = slot
        .lock()
        .expect("the sink's directory slot is never poisoned")
        .clone()
        .filter(|d| d.unchanged());
    let dir = match kept {
        Some(dir) => dir,
        None => {
            let dir = open_dir(parent_dir(path), dir_options(attrs)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            // Crash leftovers next to the file (once per directory per process).
            sweep_stale_temps_once(&dir, STALE_TEMP_AGE);
            let dir = std::sync::Arc::new(dir);
            *slot
                .lock()
                .expect("the sink's directory slot is never poisoned") = Some(dir.clone());
            dir
        }
    };
    let written = dir.write_atomic(name, content, attrs);
    if written.is_err() {
        // Open it afresh next time: whatever failed may have been the directory.
        slot.lock()
            .expect("the sink's directory slot is never poisoned")
            .take();
    }
    written
}

/// Reports an error result against `field`, keeping the value of an `Ok`.
fn report<T>(v: &mut Validator<'_>, field: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|message| v.error(field, message)).ok()
}

/// Parses an octal mode string (`"0640"`, `"640"`). A bare TOML integer is rejected as
/// ambiguous (SPEC §4): `mode = 0640` would be read as decimal 640 by TOML.
pub fn parse_mode(value: &toml::Value) -> Result<u32, String> {
    match value {
        toml::Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if (3..=4).contains(&digits.len()) && digits.chars().all(|c| ('0'..='7').contains(&c)) {
                u32::from_str_radix(digits, 8).map_err(|_| format!("{s:?} is not an octal mode"))
            } else {
                Err(format!(
                    "{s:?} is not an octal mode: expected 3 or 4 octal digits, e.g. \"0640\""
                ))
            }
        }
        toml::Value::Integer(i) => Err(format!(
            "the bare integer {i} is ambiguous (TOML reads it as decimal): write the mode as an octal string, e.g. mode = \"0640\""
        )),
        other => Err(format!(
            "expected an octal mode string such as \"0640\", found {}",
            other.type_str()
        )),
    }
}

/// The modes a token file may have: the owner can read it (`0000`, `0200` are mistakes), no
/// setuid, setgid or sticky bit (meaningless on a token, alarming on a root-owned file), and
/// not writable by others (anyone could replace the token an app trusts). Group write and
/// read by others stay allowed (`0660`, `0644`): sharing is the config's choice. So the
/// accepted range is 0400..=0775 without the others' write bit.
pub fn check_mode(mode: u32) -> Result<u32, String> {
    if mode & 0o7000 != 0 {
        return Err(format!(
            "\"{mode:04o}\" sets the setuid, setgid or sticky bit: a token file needs none, e.g. \"0600\" or \"0640\""
        ));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "\"{mode:04o}\" lets every user write the token file: drop the others' write bit, e.g. \"0640\""
        ));
    }
    if mode & 0o400 == 0 {
        return Err(format!(
            "\"{mode:04o}\" does not let the owner read the file: expected 0400 to 0775, e.g. \"0600\""
        ));
    }
    Ok(mode)
}

/// A sink path as written (`raw`) and resolved (`full`) must name a file: not empty, no NUL
/// byte, not ending in `/`, `.` or `..`, and not an existing directory (the rename onto it
/// would fail at every refresh).
pub fn check_path(raw: &std::path::Path, full: &std::path::Path) -> Result<(), String> {
    let bytes = raw.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err("must not be empty: give a file path, e.g. \"/run/tokend/app.token\"".into());
    }
    if bytes.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    let shown = raw.display().to_string();
    let last = bytes.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if matches!(last, b"" | b"." | b"..") || raw.file_name().is_none() {
        return Err(format!(
            "{shown:?} names a directory: expected a file path, e.g. \"/run/tokend/app.token\""
        ));
    }
    if std::fs::symlink_metadata(full).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "{} is a directory: expected a file path",
            full.display()
        ));
    }
    Ok(())
}

fn lookup_user(name: &str) -> Result<u32, String> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no such user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no such group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

impl FileSink {
    /// The file this sink writes.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `file:<path>`.
    pub fn label(&self) -> String {
        format!("file:{}", self.path.display())
    }

    /// Renders the file's content.
    pub fn render(&self, doc: &TokenDocument, now: SystemTime) -> Result<String, SinkError> {
        let token = doc.access_token.expose_secret();
        Ok(match &self.format {
            Format::Raw => format!("{token}\n"),
            Format::Bearer => format!("Bearer {token}\n"),
            Format::Json => format!("{}\n", doc.json(now)),
            Format::Env(key) => format!("{key}={token}\n"),
            Format::Template(t) => {
                let ctx = minijinja::context! {
                    access_token => token,
                    token_type => &doc.token_type,
                    expires_at => doc.expires_at_rfc3339(),
                    expires_in => doc.expires_in(now),
                    account => &doc.account,
                    provider => &doc.provider,
                };
                minijinja::Environment::new()
                    .render_str(t, ctx)
                    .map_err(|e| {
                        SinkError::Permanent(format!(
                            "{}: template failed: {}",
                            self.label(),
                            e.kind()
                        ))
                    })?
            }
        })
    }

    /// Replaces the file atomically, applying mode and ownership.
    pub async fn write(&self, doc: &TokenDocument) -> Result<WriteOutcome, SinkError> {
        let content = self.render(doc, SystemTime::now())?;
        let path = self.path.clone();
        let attrs = self.attrs;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_file(&dir, &path, content.as_bytes(), attrs))
            .await
            .map_err(|e| SinkError::Transient(format!("file write task failed: {e}")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => {
                    SinkError::Permanent(e.to_string())
                }
                _ => SinkError::Transient(e.to_string()),
            })?;
        Ok(WriteOutcome::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_must_be_octal_strings() {
        assert_eq!(parse_mode(&toml::Value::String("0640".into())), Ok(0o640));
        assert_eq!(parse_mode(&toml::Value::String("600".into())), Ok(0o600));
        assert!(
            parse_mode(&toml::Value::String("0999".into()))
                .unwrap_err()
                .contains("not an octal mode")
        );
        assert!(
            parse_mode(&toml::Value::Integer(640))
                .unwrap_err()
                .contains("ambiguous")
        );
    }

    #[test]
    fn mode_rule_table() {
        // (mode, accepted?)
        let cases = [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o644, true),
            (0o660, true),
            (0o770, true),
            (0o775, true),
            (0o000, false),
            (0o200, false),
            (0o040, false),
            (0o4755, false),
            (0o2750, false),
            (0o1600, false),
            (0o7777, false),
            (0o666, false),
            (0o602, false),
            (0o777, false),
        ];
        for (mode, want) in cases {
            let got = check_mode(mode);
            assert_eq!(got.is_ok(), want, "{mode:04o}: {got:?}");
        }
    }

    /// Issue 16: the directory is kept between writes, but never past a change that would
    /// fail its judgement or a removal: a recreated directory gets the token, one made
    /// writable by others is refused again, and a symlink put in its place later redirects
    /// nothing (the kept directory is written, as it would be by a fresh no-follow open).
    #[test]
    fn the_kept_directory_is_dropped_when_it_changes() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("tokend-keptdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("t");
        let slot = DirSlot::default();
        let write = |text: &str| write_file(&slot, &file, text.as_bytes(), FileAttrs::PRIVATE);
        write("one").unwrap();
        assert!(slot.lock().unwrap().is_some(), "kept after a write");
        write("two").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
        // Removed and recreated: the kept handle is stale, the new directory is written.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        write("three").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "three");
        // Made writable by others: judged again, and refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            write("four").is_err(),
            "an other-writable directory is refused"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "three");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        write("five").unwrap();
        // Renamed away and a symlink put in its place: writes stay in the real directory.
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&dir, root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        let _ = write("six");
        assert!(
            !elsewhere.join("t").exists(),
            "the symlink redirected a write"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn sink_paths_must_name_files() {
        use std::path::Path;
        let dir = std::env::temp_dir();
        for (raw, want) in [
            ("/run/tokend/a.token", true),
            ("a.token", true),
            ("", false),
            ("/tmp/", false),
            ("/run/tokend/.", false),
            ("/run/tokend/..", false),
            ("a\0b", false),
        ] {
            let got = check_path(Path::new(raw), &dir.join(raw));
            assert_eq!(got.is_ok(), want, "{raw:?}: {got:?}");
        }
        // An existing directory, spelled as a file.
        let got = check_path(Path::new("x"), &dir);
        assert!(got.unwrap_err().contains("is a directory"));
    }

    #[test]
    fn formats_render_as_documented() {
        let doc = TokenDocument {
            account: "a".into(),
            provider: "p".into(),
            access_token: "T".to_string().into(),
            token_type: "Bearer".into(),
            expires_at: SystemTime::UNIX_EPOCH,
            generation: 1,
        };
        let sink = |format| FileSink {
            path: "x".into(),
            format,
            attrs: FileAttrs::PRIVATE,
            dir: DirSlot::default(),
        };
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(sink(Format::Raw).render(&doc, now).unwrap(), "T\n");
        assert_eq!(
            sink(Format::Bearer).render(&doc, now).unwrap(),
            "Bearer T\n"
        );
        assert_eq!(
            sink(Format::Env("API".into())).render(&doc, now).unwrap(),
            "API=T\n"
        );
        assert_eq!(
            sink(Format::Template(
                "{{ account }}:{{ access_token }}:{{ expires_at }}".into()
            ))
            .render(&doc, now)
            .unwrap(),
            "a:T:1970-01-01T00:00:00Z"
        );
        assert!(
            sink(Format::Json)
                .render(&doc, now)
                .unwrap()
                .ends_with("}\n")
        );
    }
}
