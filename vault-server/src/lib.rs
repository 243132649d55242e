//! dzl-vault's HTTP service as a library: [`create_app`] builds the actix-web
//! app over an [`AppState`] (in-process tests use it directly), and
//! [`startup::Application`] binds a listener and runs it (the `dzl-vault`
//! binary only wires settings to it).
//!
//! Architecture invariants:
//! * Only this crate knows HTTP. It speaks to storage through
//!   `dzl_store::Store`, always on the blocking pool.
//! * Errors become problem+json in exactly one place, [`error::ApiError`].
//! * Personal data never reaches a log line, a metric label or an error
//!   body: logs carry route patterns, statuses and ids; errors carry the
//!   rule that failed, never the value.

pub mod conn;
pub mod demo;
pub mod error;
pub mod extract;
pub mod jcs;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod tls;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{middleware, web, App, HttpResponse, Route};
use dzl_types::ErrorCode;

use crate::error::ApiError;
pub use crate::state::AppState;

/// Every route: method, path pattern, handler. The OpenAPI document must
/// declare exactly these (a test holds them together).
pub fn routes() -> Vec<(&'static str, &'static str, Route)> {
    use routes::{funder, operator, ops, platform};
    vec![
        ("GET", "/v1/openapi.json", web::get().to(ops::openapi)),
        ("GET", "/v1/receipt-keys", web::get().to(ops::receipt_keys)),
        (
            "POST",
            "/v1/deposits",
            web::post().to(platform::create_deposit),
        ),
        (
            "POST",
            "/v1/deposits/{deposit_id}/codes",
            web::post().to(platform::issue_code),
        ),
        (
            "DELETE",
            "/v1/deposits/{deposit_id}",
            web::delete().to(platform::erase_deposit),
        ),
        (
            "GET",
            "/v1/codes/{code_id}",
            web::get().to(platform::code_status),
        ),
        (
            "POST",
            "/v1/codes/{code_id}/revoke",
            web::post().to(platform::revoke_code),
        ),
        ("POST", "/v1/redemptions", web::post().to(funder::redeem)),
        (
            "POST",
            "/v1/redemptions/{redemption_id}/outcome",
            web::post().to(funder::report_outcome),
        ),
        (
            "POST",
            "/v1/subject-access",
            web::post().to(operator::subject_access),
        ),
        ("GET", "/healthz", web::get().to(ops::healthz)),
        ("GET", "/readyz", web::get().to(ops::readyz)),
        ("GET", "/metrics", web::get().to(ops::metrics)),
    ]
}

/// [`routes`] by path, each with its methods and handlers, in the order
/// actix tries them: paths without parameters first. actix tries resources
/// in order, for the request and again for its route pattern (metrics and
/// logs), and each pattern with a parameter it tries is a regex match
/// (docs/performance.md, "How the write path is built").
fn resources() -> Vec<(&'static str, Vec<&'static str>, Vec<Route>)> {
    let mut resources: Vec<(&'static str, Vec<&'static str>, Vec<Route>)> = Vec::new();
    for (method, path, route) in routes() {
        match resources.iter_mut().find(|(p, ..)| *p == path) {
            Some((_, ms, rs)) => {
                ms.push(method);
                rs.push(route);
            }
            None => resources.push((path, vec![method], vec![route])),
        }
    }
    // Stable: the order of `routes` holds within each kind.
    resources.sort_by_key(|(path, ..)| path.contains('{'));
    resources
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound))
}

/// The application over `state`.
pub fn create_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Response = ServiceResponse<impl MessageBody>,
        Config = (),
        InitError = (),
        Error = actix_web::Error,
    >,
> {
    let mut app = App::new()
        .app_data(state)
        .wrap(
            middleware::DefaultHeaders::new()
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Cache-Control", "no-store")),
        )
        .wrap_fn(|req, srv| {
            use actix_web::dev::Service as _;
            let start = Instant::now();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                let method = metrics::method_label(res.request().method());
                let status = res.status().as_u16();
                let secs = start.elapsed().as_secs_f64();
                if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
                    state.metrics.observe(method, &route, status, secs);
                }
                log::info!("{method} {route} {status} {:.1}ms", secs * 1000.0);
                Ok(res)
            }
        });
    for (path, methods, rs) in resources() {
        let allow = methods.join(", ");
        let mut resource = web::resource(path).default_service(web::to(move || {
            let allow = allow.clone();
            async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(&allow)) }
        }));
        for r in rs {
            resource = resource.route(r);
        }
        app = app.service(resource);
    }
    app.default_service(web::to(not_found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_without_parameters_are_tried_first_and_every_path_once() {
        let paths: Vec<&str> = resources().iter().map(|(p, ..)| *p).collect();
        let first_pattern = paths
            .iter()
            .position(|p| p.contains('{'))
            .unwrap_or(paths.len());
        assert!(
            paths[first_pattern..].iter().all(|p| p.contains('{')),
            "{paths:?}"
        );
        for hot in ["/v1/deposits", "/v1/redemptions"] {
            assert!(paths[..first_pattern].contains(&hot), "{paths:?}");
        }
        let mut all: Vec<&str> = routes().iter().map(|(_, p, _)| *p).collect();
        all.sort_unstable();
        all.dedup();
        let mut listed = paths.clone();
        listed.sort_unstable();
        assert_eq!(listed, all);
    }
}
