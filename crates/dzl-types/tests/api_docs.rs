//! `docs/api.md` and `schemas/openapi.json` describe the same API: the same
//! routes, each with the same statuses and problem codes, and the same
//! problem codes as `ErrorCode`; the signing example is the first contract
//! vector; every route the docs and the README name exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dzl_types::ErrorCode;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{} must be readable: {e}", p.display()))
}

fn openapi() -> Value {
    serde_json::from_str(&repo_file("schemas/openapi.json")).unwrap()
}

/// Route → status → problem codes.
type Table = BTreeMap<String, BTreeMap<u16, BTreeSet<String>>>;

fn documented_in_openapi(doc: &Value) -> Table {
    let responses = &doc["components"]["responses"];
    let mut out = Table::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let route = format!("{} {path}", method.to_uppercase());
            let mut statuses = BTreeMap::new();
            for (status, response) in op["responses"].as_object().unwrap() {
                let response = match response["$ref"].as_str() {
                    Some(r) => &responses[r.rsplit('/').next().unwrap()],
                    None => response,
                };
                let codes = response["content"]["application/problem+json"]["examples"]
                    .as_object()
                    .map(|examples| {
                        examples
                            .values()
                            .map(|e| e["value"]["code"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                statuses.insert(status.parse().unwrap(), codes);
            }
            out.insert(route, statuses);
        }
    }
    out
}

fn backticked(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The route sections of api.md: `### `METHOD /path`` and the rows of the
/// status table under it.
fn documented_in_api_md(text: &str) -> Table {
    let mut out = Table::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            // Route headings only (`### `dzlctl`` is not one).
            current = heading
                .strip_suffix('`')
                .filter(|h| h.contains(" /"))
                .map(str::to_owned);
            if let Some(route) = &current {
                assert!(
                    out.insert(route.clone(), BTreeMap::new()).is_none(),
                    "{route} twice"
                );
            }
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let Some(route) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Ok(status) = cells[1].parse::<u16>() else {
            continue;
        };
        let statuses = out.get_mut(route).unwrap();
        assert!(
            statuses.insert(status, backticked(cells[2])).is_none(),
            "{route}: status {status} twice"
        );
    }
    out
}

#[test]
fn every_route_has_the_same_statuses_and_problem_codes_in_the_docs_and_the_openapi_document() {
    let from_openapi = documented_in_openapi(&openapi());
    let from_docs = documented_in_api_md(&repo_file("docs/api.md"));
    let routes = |t: &Table| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        routes(&from_docs),
        routes(&from_openapi),
        "the routes of docs/api.md and schemas/openapi.json differ"
    );
    for (route, statuses) in &from_openapi {
        assert_eq!(
            &from_docs[route], statuses,
            "{route}: docs/api.md (left) and schemas/openapi.json (right) differ"
        );
    }
}

#[test]
fn the_problem_code_table_is_every_error_code_with_its_status_and_title() {
    let text = repo_file("docs/api.md");
    let section = text
        .split("\n## Problem codes\n")
        .nth(1)
        .expect("a Problem codes section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        rows.push((
            cells[1].trim_matches('`').to_owned(),
            cells[2].parse::<u16>().unwrap(),
            cells[3].to_owned(),
        ));
    }
    let expected: Vec<(String, u16, String)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), c.status(), c.title().to_owned()))
        .collect();
    assert_eq!(rows, expected);

    let doc = openapi();
    let enumerated: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]
        ["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let tabled: BTreeSet<String> = rows.into_iter().map(|(c, ..)| c).collect();
    assert_eq!(tabled, enumerated, "docs/api.md and the Problem schema");
}

#[test]
fn the_worked_signing_example_is_the_first_contract_vector() {
    let text = repo_file("docs/api.md");
    let vectors: Value = serde_json::from_str(&repo_file(
        "crates/dzl-types/tests/vectors/signing-vectors.json",
    ))
    .unwrap();
    let v = &vectors["vectors"][0];
    let s = |k: &str| v[k].as_str().unwrap();
    for needle in [
        s("key_id"),
        s("secret"),
        s("body_utf8"),
        s("nonce"),
        s("signature"),
        &v["timestamp"].to_string(),
    ] {
        assert!(text.contains(needle), "docs/api.md lacks {needle}");
    }
    // The canonical string, as the page shows it (one line each).
    assert!(text.contains(&format!("```\n{}\n```", s("canonical"))));
    let computed = dzl_types::signing::sign(
        s("secret").as_bytes(),
        &dzl_types::signing::canonical(
            s("method"),
            s("path_and_query"),
            v["timestamp"].as_i64().unwrap(),
            s("nonce"),
            s("body_utf8").as_bytes(),
        ),
    );
    assert_eq!(computed, s("signature"));
}

/// Whether `path` is `pattern` with each `{param}` standing for one segment.
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
}

#[test]
fn every_route_the_docs_and_the_readme_name_exists() {
    let routes: Vec<(String, String)> = documented_in_openapi(&openapi())
        .into_keys()
        .map(|r| {
            let (m, p) = r.split_once(' ').unwrap();
            (m.to_owned(), p.to_owned())
        })
        .collect();
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    for entry in std::fs::read_dir(docs).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().ends_with(".md") {
            files.push(PathBuf::from("docs").join(name));
        }
    }
    let mut unknown = Vec::new();
    for file in &files {
        let text = repo_file(file.to_str().unwrap());
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
            for (i, _) in text.match_indices(&format!("{method} /")) {
                let rest = &text[i + method.len() + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "/{}_.-".contains(c)))
                    .unwrap_or(rest.len());
                let path = rest[..end].trim_end_matches('.');
                let ours =
                    path.starts_with("/v1/") || ["/healthz", "/readyz", "/metrics"].contains(&path);
                if ours && !routes.iter().any(|(m, p)| m == method && matches(p, path)) {
                    unknown.push(format!("{}: {method} {path}", file.display()));
                }
            }
        }
    }
    assert!(unknown.is_empty(), "no such route: {unknown:#?}");
}
