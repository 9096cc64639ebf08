"""The UI's one way to the API: small typed calls over httpx, every failure an `ApiError`
with a sentence a clerk can act on (never a traceback)."""

from __future__ import annotations

from typing import Any

import httpx

from invoicechain.config import get_settings

#: Seconds to wait for an answer; uploads and training submissions get longer.
TIMEOUT_S = 10.0
UPLOAD_TIMEOUT_S = 60.0


class ApiError(Exception):
    """The API could not be reached, or it answered with an error."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    @property
    def unreachable(self) -> bool:
        return self.status_code is None


def _detail(resp: httpx.Response) -> str:
    """The API's explanation of an error answer, as one readable text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):  # e.g. training data: a message and its problems by line
        message = str(detail.get("message", detail))
        problems = [p for p in detail.get("problems") or [] if isinstance(p, dict)]
        lines = [f"line {p.get('line')}: {p.get('reason')}" for p in problems[:10]]
        return "\n".join([message, *(line for line in lines if line not in message)])
    if isinstance(detail, list):  # request validation errors
        parts = []
        for err in detail:
            if isinstance(err, dict):
                where = ".".join(str(x) for x in err.get("loc", []) if x != "body")
                parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    return str(detail)


class ApiClient:
    """Calls of the Invoice Toolchain HTTP API used by the UI."""

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = TIMEOUT_S) -> None:
        settings = get_settings()
        self.base_url = (base_url or settings.api_url).rstrip("/")
        token = token if token is not None else settings.api_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    # --- transport -----------------------------------------------------------------------

    def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), timeout: float | None = None, **kw: Any) -> httpx.Response:
        url = self.base_url + path
        try:
            resp = httpx.request(method, url, headers=self.headers, timeout=timeout or self.timeout, **kw)
        except httpx.TimeoutException as exc:
            raise ApiError(f"The API at {self.base_url} did not answer within {timeout or self.timeout:.0f} s.") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"The API at {self.base_url} is not reachable ({type(exc).__name__}). Is it running?") from exc
        if resp.status_code not in ok:
            if resp.status_code == 401:
                raise ApiError("The API refused the request: set INVOICECHAIN_API_TOKEN to its token.", 401)
            raise ApiError(f"{_detail(resp)} (HTTP {resp.status_code})", resp.status_code)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(f"The API answered {path} with something that is not JSON.", resp.status_code) from exc

    # --- health --------------------------------------------------------------------------

    def readiness(self) -> dict:
        """`/readyz`: {"status": "ready"|"unavailable", "checks": {...}}; 503 is an answer, not an error."""
        return self._json("GET", "/readyz", ok=(200, 503), timeout=5)

    # --- invoices ------------------------------------------------------------------------

    def submit_pdf(self, filename: str, data: bytes) -> dict:
        """Upload one PDF; the answer has id, status and `duplicate`."""
        files = {"file": (filename, data, "application/pdf")}
        return self._json("POST", "/v1/invoices", files=files, ok=(200, 202), timeout=UPLOAD_TIMEOUT_S)

    def submit_text(self, text: str, filename: str = "pasted.txt") -> dict:
        """Submit pasted invoice text; the answer has id, status and `duplicate`."""
        return self._json("POST", "/v1/invoices", json={"text": text, "filename": filename}, ok=(200, 202))

    def list_invoices(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """One page of invoices, newest first: {items, total, limit, offset}."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._json("GET", "/v1/invoices", params=params)

    def count_invoices(self, status: str) -> int:
        """How many invoices are in one status."""
        return int(self.list_invoices(status=status, limit=1)["total"])

    def get_invoice(self, invoice_id: str) -> dict:
        """One invoice with its fields, confidence, grounding, document and steps."""
        return self._json("GET", f"/v1/invoices/{invoice_id.strip()}")

    def approve(self, invoice_id: str, approver: str, role: str | None = None, reason: str | None = None) -> dict:
        body = {"approver": approver, "role": role or None, "reason": reason or None}
        return self._json("POST", f"/v1/invoices/{invoice_id}/approve", json=body)

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict:
        return self._json("POST", f"/v1/invoices/{invoice_id}/reject", json={"approver": approver, "reason": reason})

    def correct(self, invoice_id: str, actor: str, reason: str, fields: dict | None = None,
                decisions: dict[str, str] | None = None) -> dict:
        """A reviewer's correction of field values and/or step decisions."""
        body = {"actor": actor, "reason": reason, "fields": fields or None, "decisions": decisions or None}
        return self._json("PATCH", f"/v1/invoices/{invoice_id}", json=body)

    def review_queue(self, limit: int = 50, offset: int = 0) -> dict:
        """Invoices waiting in `needs_review`, oldest first, with their steps."""
        return self._json("GET", "/v1/review-queue", params={"limit": limit, "offset": offset})

    # --- training ------------------------------------------------------------------------

    def submit_training_job(self, adapter: str, data_source: str, params: dict) -> dict:
        body = {"adapter": adapter, "data_source": data_source, "params": params}
        return self._json("POST", "/v1/training-jobs", json=body, ok=(202,), timeout=UPLOAD_TIMEOUT_S)

    def upload_training_data(self, adapter: str, filename: str, data: bytes, params: dict) -> dict:
        """A training job on an uploaded JSONL file (checked line by line by the API)."""
        import json

        files = {"file": (filename, data, "application/jsonl")}
        form = {"adapter": adapter, "params": json.dumps(params)}
        return self._json("POST", "/v1/training-jobs", files=files, data=form, ok=(202,), timeout=UPLOAD_TIMEOUT_S)

    def list_training_jobs(self, limit: int = 50) -> list[dict]:
        return self._json("GET", "/v1/training-jobs", params={"limit": limit})

    def cancel_training_job(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/training-jobs/{job_id}/cancel")
