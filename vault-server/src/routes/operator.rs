//! The operator's route: the subject-access report (个人查询本人信息).

use actix_web::{HttpRequest, HttpResponse};
use dzl_types::wire::SubjectAccessRequest;

use super::{block, call, State};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, Operator, Signed};

/// `POST /v1/subject-access`: the id number travels in the body only.
pub async fn subject_access(
    state: State,
    req: HttpRequest,
    signed: Signed<Operator>,
) -> ApiResult<HttpResponse> {
    let (body, caller) = signed.into_parts();
    let r: SubjectAccessRequest = parse_json(&req, &body)?;
    dzl_types::domain::check_id_number(
        r.id_type,
        &r.id_number,
        dzl_types::domain::today_in_china(),
    )
    .map_err(|e| ApiError::invalid("/id_number", format!("/id_number: {e}")))?;
    // Both suites' indexes: deposits made before the vault changed suite,
    // and erased ones, keep the index they were filed under.
    let indexes = caller
        .loaded
        .keys
        .subject_indexes(r.id_type.as_str(), &r.id_number);
    let c = call(&state, &caller.tenant.id, "subject_access.query");
    let report = block(&state, move |s| s.subject_access(&c, &indexes)).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(report))
}
