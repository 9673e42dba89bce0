//! Requests as the dbt-remote 0.4.6 CLI sends them (../shared/compat/dbt-remote-0.4.6-request.md):
//! multipart parts in its order, each `text/plain`, and a zip of STORED entries.

use std::io::Write;

/// The `dbt_native_params_overrides` the 0.4.6 CLI sent for
/// `dbt-remote build --select some_model --server-url … --manifest target`, exactly.
pub const CAPTURED_OVERRIDES: &str = "{'cache_selected_only': False, 'debug': False, 'enable_legacy_logger': False, 'fail_fast': False, 'log_cache_events': False, 'log_file_max_bytes': 10485760, 'log_format_file': 'debug', 'log_level': 'info', 'log_level_file': 'debug', 'macro_debugging': False, 'partial_parse': True, 'partial_parse_file_diff': True, 'populate_cache': True, 'print': True, 'printer_width': 80, 'quiet': False, 'send_anonymous_usage_stats': True, 'single_threaded': False, 'static_parser': True, 'use_colors': True, 'use_colors_file': True, 'use_experimental_parser': False, 'version_check': True, 'write_json': True, 'log_format': 'default', 'server_url': 'http://127.0.0.1:18081/', 'manifest': 'target'}";

/// The captured overrides with more `'key': value` pairs, e.g. `'target': 'dev'`.
pub fn overrides_with(extra: &str) -> String {
    format!("{}, {extra}}}", CAPTURED_OVERRIDES.trim_end_matches('}'))
}

/// A zip whose entries are STORED, in the given order.
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (name, content) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file(*name, options).unwrap();
        zip.write_all(content).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// One part of a form: name, file name (only `zipped_artifacts` has one), content.
pub type Part<'a> = (&'a str, Option<&'a str>, Vec<u8>);

/// The fields of a `POST /dbt` in the 0.4.6 CLI's order.
pub struct Form {
    pub server_url: String,
    pub user_command: String,
    pub overrides: String,
    pub dbt_project: Vec<u8>,
    pub profiles: Vec<u8>,
    pub packages: Option<Vec<u8>>,
    pub zipped_artifacts: Vec<u8>,
}

impl Form {
    pub fn parts(&self) -> Vec<Part<'static>> {
        let mut parts: Vec<Part<'static>> = vec![
            ("server_url", None, self.server_url.clone().into_bytes()),
            ("user_command", None, self.user_command.clone().into_bytes()),
            (
                "dbt_native_params_overrides",
                None,
                self.overrides.clone().into_bytes(),
            ),
            ("dbt_project", None, self.dbt_project.clone()),
            ("profiles", None, self.profiles.clone()),
        ];
        if let Some(p) = &self.packages {
            parts.push(("packages", None, p.clone()));
        }
        parts.push((
            "zipped_artifacts",
            Some("zipped_artifacts"),
            self.zipped_artifacts.clone(),
        ));
        parts
    }
}

/// A multipart/form-data body of `parts`, each `Content-Type: text/plain` as requests sends
/// them; returns the content type and the body.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "3f1c9e0d7b2a4e6f8a1b2c3d4e5f6a7b";
    let mut body = Vec::new();
    for (name, file, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(f) => {
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n")
            }
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"Content-Type: text/plain\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts `parts` to `url` as multipart/form-data.
pub async fn post_form(url: &str, parts: &[Part<'_>]) -> reqwest::Response {
    let (content_type, body) = multipart(parts);
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("authorization", "Bearer not-checked-by-the-local-default")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Whether `line` is `YYYY-MM-DDTHH:MM:SSZ<TAB>LEVEL<TAB>message` with no newline.
pub fn is_legacy_line(line: &str) -> bool {
    let mut fields = line.splitn(3, '\t');
    let (Some(time), Some(level), Some(_)) = (fields.next(), fields.next(), fields.next()) else {
        return false;
    };
    time.len() == 20
        && time.ends_with('Z')
        && chrono::DateTime::parse_from_rfc3339(time).is_ok()
        && ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&level)
        && !line.contains('\n')
}
