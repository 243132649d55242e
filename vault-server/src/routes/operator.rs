//! The operator's route: the subject-access report (个人查询本人信息).

use actix_web::{HttpRequest, HttpResponse};
use dzl_types::wire::SubjectAccessRequest;

use super::platform::subject_key;
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
    let subject = subject_key(r.id_type.as_str(), &r.id_number);
    let index = dzl_crypto::blind_index(
        &caller.loaded.keys.subject_index,
        "subject",
        subject.as_bytes(),
    );
    let c = call(&state, &caller.tenant.id, "subject_access.query");
    let report = block(&state, move |s| s.subject_access(&c, &[index])).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(report))
}
