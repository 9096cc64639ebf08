"""Invoice Toolchain for accounts payable: inbox, invoices, review queue and training.

Run with `streamlit run ui/app.py`; every call goes to the HTTP API (`INVOICECHAIN_API_URL`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

# `streamlit run ui/app.py` puts only ui/ on the import path; the packages live one level up.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from invoicechain.config import get_settings  # noqa: E402
from invoicechain.decisions import ALL_STEPS, TERMINAL_STATUSES, TOOLCHAIN_STEPS, Decision, InvoiceStatus, Step  # noqa: E402
from invoicechain.enums import AdapterName, StepRunStatus, TrainingJobStatus  # noqa: E402
from invoicechain.desk import override_options  # noqa: E402
from invoicechain.schema import SCALAR_FIELDS  # noqa: E402
from ui.client import ApiClient, ApiError  # noqa: E402

log = logging.getLogger(__name__)

PAGES = ("Inbox", "Invoices", "Invoice detail", "Review queue", "Training")
STATUSES = tuple(s.value for s in InvoiceStatus)
REFRESH_S = 10
S, D = InvoiceStatus, Decision
STATUS_COLORS = {
    S.RECEIVED: "gray", S.PROCESSING: "blue", S.NEEDS_OCR: "orange", S.FAILED: "red", S.INVALID: "red",
    S.NEEDS_REVIEW: "orange", S.PENDING_APPROVAL: "violet", S.REJECTED: "red", S.PAYMENT_HELD: "orange",
    S.PAYMENT_READY: "green",
}
DECISION_COLORS = {
    D.OK: "green", D.VALID: "green", D.MATCHED: "green", D.APPROVED: "green", D.SCHEDULED: "green",
    D.PARTIAL: "orange", D.NO_PO: "blue", D.PENDING_APPROVAL: "violet", D.HELD: "orange", D.NEEDS_OCR: "orange",
    D.INVALID: "red", D.NO_MATCH: "red", D.REJECTED: "red", D.FAILED: "red",
}
FIELD_LABELS = {"invoice_id": "Invoice number", "po_number": "PO number", "tax": "Tax (VAT)"}
J = TrainingJobStatus
JOB_COLORS = {J.QUEUED: "gray", J.RUNNING: "blue", J.DONE: "green", J.FAILED: "red", J.CANCELLED: "orange"}
STEP_LABELS = {
    Step.INGEST: "Ingest", Step.EXTRACT: "Extract fields", Step.VALIDATE: "Validate",
    Step.MATCH_PO: "Match PO", Step.APPROVAL: "Approval", Step.PAYMENT: "Payment",
}


# --- small formatting pieces ---------------------------------------------------------------


def upload_limit_mb() -> int:
    """The API's upload limit (settings.max_upload_bytes) in Streamlit's whole megabytes, so the
    uploaders refuse what the API would refuse (Streamlit's own default is 200 MB)."""
    return max(1, get_settings().max_upload_bytes // (1024 * 1024))


def label(name: str) -> str:
    """A status or field name as a person writes it."""
    return FIELD_LABELS.get(name) or name.replace("_", " ").capitalize()


def md(text: object) -> str:
    """Text shown literally inside markdown (a vendor name with `*` or `|` stays as written)."""
    out = str(text)
    for ch in "\\`*_[]<>|$#~:":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def say_error(text: str, where=st) -> None:
    """An error sentence from the API, its line breaks kept (markdown would join them)."""
    where.error(str(text).replace("$", "\\$").replace("\n", "  \n"), icon=":material/error:")


def code(text: object) -> str:
    """Inline code (markdown escapes do not apply inside it)."""
    return f"`{str(text).replace('`', '')}`"


def badge(text: str, color: str) -> str:
    return f":{color}-badge[{md(text)}]"


def status_badge(status: str) -> str:
    return badge(label(status), STATUS_COLORS.get(status, "gray"))


def confidence_badge(value: object) -> str:
    if isinstance(value, dict):  # per-field details: the score is under "confidence"
        value = value.get("confidence")
    if not isinstance(value, (int, float)):
        return badge("n/a", "gray")
    color = "green" if value >= 0.9 else "orange" if value >= 0.7 else "red"
    return badge(f"{value:.0%}", color)


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def when(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "–"


def summary_line(inv: dict) -> str:
    """Vendor · invoice number · total: how a clerk recognises an invoice."""
    f = inv.get("fields") or {}
    total = f"{f.get('total_amount')} {f.get('currency') or ''}".strip() if f.get("total_amount") else None
    parts = [f.get("vendor_name"), f.get("invoice_id"), total]
    doc = inv.get("document") or {}
    return " · ".join(str(p) for p in parts if p) or doc.get("filename") or inv["id"]


def guarded(render):
    """A page or an auto-refreshing part of one: failures become a sentence, never a traceback."""

    @functools.wraps(render)
    def run(client: ApiClient) -> None:
        try:
            render(client)
        except ApiError as exc:
            say_error(exc.message)
        except Exception as exc:  # the traceback goes to the log
            log.exception("%s failed", render.__name__)
            st.error(f"Something went wrong here ({type(exc).__name__}: {exc}). Reload to try again.")

    return run


def go_to(page: str, invoice_id: str | None = None) -> None:
    """Switch page on the next run (a widget's state can only be set before it is drawn)."""
    st.session_state["goto"] = (page, invoice_id)
    st.rerun()


def open_button(invoice_id: str, key: str) -> None:
    if st.button("Open", key=key, icon=":material/open_in_new:"):
        go_to("Invoice detail", invoice_id)


# --- sidebar ---------------------------------------------------------------------------------


def health_badge(client: ApiClient) -> bool:
    """The readiness badge; False when the API cannot be reached at all."""
    try:
        ready = client.readiness()
    except ApiError as exc:
        st.badge("API unreachable", icon=":material/cloud_off:", color="red")
        st.caption(exc.message)
        return False
    if ready.get("status") == "ready":
        st.badge("API ready", icon=":material/check_circle:", color="green")
    else:
        failing = ", ".join(f"{k}: {v}" for k, v in (ready.get("checks") or {}).items() if v != "ok")
        st.badge("API not ready", icon=":material/warning:", color="orange")
        st.caption(failing or "The API reports it is not ready.")
    return True


# --- Inbox -----------------------------------------------------------------------------------


def inbox_page(client: ApiClient) -> None:
    st.header("Inbox")
    st.caption("Send invoices in; each one is read, checked and routed automatically.")
    tab_pdf, tab_text = st.tabs(["Upload PDFs", "Paste text"])
    with tab_pdf:
        files = st.file_uploader("Invoice PDFs", type=["pdf"], accept_multiple_files=True, key="inbox_files",
                                 max_upload_size=upload_limit_mb())
        if st.button("Submit PDFs", type="primary", disabled=not files, key="submit_pdfs"):
            with st.spinner(f"Sending {len(files)} document(s) …"):
                st.session_state["inbox_results"] = [
                    _submit(lambda f=f: client.submit_pdf(f.name, f.getvalue()), f.name) for f in files
                ]
    with tab_text:
        text = st.text_area("Invoice text", height=220, key="inbox_text",
                            placeholder="Paste the invoice as it appears in the e-mail …")
        name = st.text_input("Name", value="pasted.txt", key="inbox_text_name")
        if st.button("Submit text", type="primary", disabled=not text.strip(), key="submit_text"):
            st.session_state["inbox_results"] = [_submit(lambda: client.submit_text(text, name or "pasted.txt"), name)]

    results = st.session_state.get("inbox_results")
    if results:
        st.subheader("Submitted")
        for i, r in enumerate(results):
            with st.container(border=True):
                left, right = st.columns([5, 1], vertical_alignment="center")
                if r["id"] is None:
                    say_error(f"{r['document']}: {r['message']}", where=left)
                    continue
                note = badge("already received", "orange") if r["duplicate"] else badge("new", "green")
                left.markdown(f"**{md(r['document'])}** {note} {status_badge(r['status'])}  \n`{r['id']}`")
                with right:
                    open_button(r["id"], key=f"inbox_open_{i}")


def _submit(call, document: str) -> dict:
    """One submission, its failure kept as a message so the other files still go through."""
    try:
        body = call()
        return {"document": document, "id": body["id"], "status": body["status"], "duplicate": body.get("duplicate", False)}
    except ApiError as exc:
        return {"document": document, "id": None, "message": exc.message}


# --- Invoices --------------------------------------------------------------------------------


def invoices_page(client: ApiClient) -> None:
    st.header("Invoices")
    auto = st.toggle(f"Auto-refresh every {REFRESH_S} s", key="invoices_auto_refresh")
    st.fragment(run_every=REFRESH_S if auto else None, key="invoice_list")(guarded(_invoice_list))(client)


def _reset_page() -> None:
    st.session_state["invoices_page_no"] = 1


def _invoice_list(client: ApiClient) -> None:
    counts = {s: client.count_invoices(s) for s in STATUSES}
    st.markdown(" ".join(f"{status_badge(s)} **{n}**" for s, n in counts.items() if n) or "No invoices yet.")

    c1, c2, c3 = st.columns([2, 1, 1])
    status = c1.selectbox("Status", ("all", *STATUSES), format_func=lambda s: "All" if s == "all" else label(s),
                          key="invoices_status", on_change=_reset_page)
    size = c2.selectbox("Per page", (25, 50, 100), key="invoices_page_size", on_change=_reset_page)
    page_no = c3.number_input("Page", min_value=1, step=1, key="invoices_page_no")
    data = client.list_invoices(status=None if status == "all" else status, limit=size, offset=(page_no - 1) * size)
    items, total = data["items"], data["total"]
    pages = max(1, -(-total // size))
    if not items:
        st.info("No invoices here." if total == 0 else f"Page {page_no} is past the end: there are {pages} page(s).")
        return
    st.caption(f"{data['offset'] + 1}–{data['offset'] + len(items)} of {total} · page {page_no} of {pages}")

    rows = []
    for inv in items:
        f = inv.get("fields") or {}
        rows.append({
            "id": inv["id"], "status": label(inv["status"]), "vendor": f.get("vendor_name"),
            "invoice no.": f.get("invoice_id"), "total": f.get("total_amount"), "currency": f.get("currency"),
            "due": f.get("due_date"), "step": STEP_LABELS.get(inv.get("current_step") or "", inv.get("current_step")),
            "document": (inv.get("document") or {}).get("filename"), "received": when(inv["created_at"]),
            "problem": inv.get("error"),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

    left, right = st.columns([5, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Open an invoice", [inv["id"] for inv in items], key="invoices_open_choice",
                            format_func=lambda i: f"{summary_line(next(x for x in items if x['id'] == i))} ({i})")
    with right:
        open_button(chosen, key="invoices_open")


# --- Invoice detail --------------------------------------------------------------------------


def detail_page(client: ApiClient) -> None:
    st.header("Invoice")
    invoice_id = st.text_input("Invoice id", key="detail_invoice_id", placeholder="Paste an invoice id").strip()
    if not invoice_id:
        st.info("Open an invoice from the Invoices page, the Review queue or the Inbox, or paste its id.")
        return
    inv = client.get_invoice(invoice_id)
    st.query_params["invoice"] = invoice_id  # the address bar now links to this invoice
    status = inv["status"]

    top, refresh = st.columns([6, 1], vertical_alignment="center")
    top.markdown(f"### {md(summary_line(inv))}\n{status_badge(status)} "
                 f"{'at ' + STEP_LABELS.get(inv['current_step'], inv['current_step']) if inv.get('current_step') else ''}")
    refresh.button("Refresh", icon=":material/refresh:", key="detail_refresh")
    doc = inv.get("document") or {}
    if doc:
        pages = f" · {doc['page_count']} page(s)" if doc.get("page_count") else ""
        st.caption(f"{doc['filename']} · {doc['size']:,} bytes{pages} · sha256 {doc['sha256'][:12]}… · "
                   f"received {when(inv['created_at'])} via {inv['source']} · id `{inv['id']}`")
    if inv.get("error"):
        say_error(inv["error"])

    st.link_button("Open in the review desk (the page beside the fields)", f"{client.base_url.rstrip('/')}/desk",
                   icon=":material/preview:")
    fields_tab, steps_tab, trail_tab = st.tabs(["Fields", "Steps", "Approvals"])
    with fields_tab:
        _fields(inv)
    with steps_tab:
        _timeline(inv)
    with trail_tab:
        _approvals(inv)

    if status in (InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.NEEDS_REVIEW):
        _approval_actions(client, inv, can_approve=status == InvoiceStatus.PENDING_APPROVAL)
    if status == InvoiceStatus.NEEDS_REVIEW or status in TERMINAL_STATUSES:
        _correction_actions(client, inv)


def _approvals(inv: dict) -> None:
    """Who approved or rejected the invoice, when, in which role and why."""
    actions = inv.get("approvals") or []
    if not actions:
        st.caption("No approval or rejection yet.")
        return
    st.dataframe(
        pd.DataFrame([{"when": when(a.get("at")), "who": a.get("approver"), "role": a.get("role") or "",
                       "decision": a.get("decision"), "reason": a.get("reason") or ""} for a in actions]),
        hide_index=True, width="stretch",
    )


def _fields(inv: dict) -> None:
    fields = inv.get("fields")
    if not fields:
        st.info("No fields yet: the invoice has not been extracted.")
        return
    conf, grounding = inv.get("confidence") or {}, inv.get("grounding") or {}
    # A value the model wrote that is nowhere in the document's text: a clerk checks it first.
    ungrounded = [k for k, g in grounding.items() if (g.get("grounded") if isinstance(g, dict) else g) is False]
    if ungrounded:
        st.warning(f"Check against the document: {', '.join(label(n) for n in ungrounded)} "
                   "could not be found in its text.", icon=":material/travel_explore:")
    flag = badge("not found in the document", "red")
    rows = ["| Field | Value | Confidence | |", "|---|---|---|---|"]
    for name in SCALAR_FIELDS:
        value = fields.get(name)
        if value is None:
            rows.append(f"| {label(name)} | *–* | | |")
        else:
            rows.append(f"| {label(name)} | {md(value)} | {confidence_badge(conf.get(name))} | {flag if name in ungrounded else ''} |")
    for key, value in (fields.get("bank") or {}).items():
        if value:
            rows.append(f"| Bank {key.replace('_', ' ')} | {md(value)} | {confidence_badge(conf.get('bank'))} | "
                        f"{flag if 'bank' in ungrounded else ''} |")
    st.markdown("\n".join(rows))
    lines = fields.get("line_items") or []
    if lines:
        note = flag if "line_items" in ungrounded else ""
        st.markdown(f"**Line items** {confidence_badge(conf.get('line_items'))} {note}")
        st.dataframe(pd.DataFrame(lines), hide_index=True, width="stretch")


def _timeline(inv: dict) -> None:
    runs = {s["step"]: s for s in inv.get("steps") or []}
    for n, step in enumerate(ALL_STEPS, start=1):
        run = runs.get(str(step))
        title = f"**{n}. {STEP_LABELS[str(step)]}**"
        with st.container(border=True):
            if run is None:
                st.markdown(f"{title} {badge('not reached', 'gray')}")
                continue
            decision = run.get("decision")
            dec = badge(decision, DECISION_COLORS.get(decision, "gray")) if decision else badge(run["status"], "blue")
            facts = [f"mode {run['mode']}" if run.get("mode") else None,
                     f"attempt {run['attempt']}" if run.get("attempt", 1) > 1 else None,
                     f"took {ms(run.get('duration_ms'))}" if run.get("duration_ms") is not None else None,
                     f"model {ms(run.get('model_ms'))}" if run.get("model_ms") is not None else None,
                     f"adapter {run['adapter_version']}" if run.get("adapter_version") else None,
                     f"finished {when(run.get('finished_at'))}" if run.get("finished_at") else None]
            agree = run.get("agree")
            if agree is True:
                dec += " " + badge("model and rules agree", "green")
            elif agree is False:
                dec += " " + badge("model and rules disagree", "red")
            st.markdown(f"{title} {dec}  \n" + " · ".join(f for f in facts if f))
            for r in run.get("reasons") or []:
                if isinstance(r, dict):
                    st.markdown(f"- {code(r.get('code', ''))} {md(r.get('message', ''))}")
                else:
                    st.markdown(f"- {md(r)}")
            if run.get("model_output") or run.get("rules_output"):
                with st.expander("Model and rules outputs"):
                    left, right = st.columns(2)
                    left.caption("Model")
                    left.json(run.get("model_output") or {})
                    right.caption("Rules")
                    right.json(run.get("rules_output") or {})


def _act(call, done: str) -> None:
    """Run an action; on success say so and reload, on failure show the API's reason."""
    try:
        call()
    except ApiError as exc:
        say_error(exc.message)
        return
    st.session_state["flash"] = done  # shown after the reload, which would drop a toast made now
    st.rerun()


def _approval_actions(client: ApiClient, inv: dict, can_approve: bool) -> None:
    st.subheader("Approval" if can_approve else "Reject")
    left, right = st.columns(2)
    if can_approve:
        _approve_form(client, inv, left)
    with (right if can_approve else left).form("reject_form"):
        who = st.text_input("Your name", key="reject_who")
        why = st.text_area("Reason for rejecting", key="reject_why")
        if st.form_submit_button("Reject", icon=":material/block:"):
            if not who.strip() or not why.strip():
                st.error("A rejection needs who rejects and why.")
            else:
                _act(lambda: client.reject(inv["id"], who.strip(), why.strip()), "Invoice rejected.")


def _approve_form(client: ApiClient, inv: dict, column) -> None:
    with column.form("approve_form"):
        who = st.text_input("Approver", key="approve_who")
        role = st.text_input("Role", value="ap_clerk", key="approve_role", help="Your role in the approval policy.")
        why = st.text_input("Note (optional)", key="approve_why")
        if st.form_submit_button("Approve", type="primary", icon=":material/thumb_up:"):
            if not who.strip():
                st.error("Say who approves.")
            else:
                _act(lambda: client.approve(inv["id"], who.strip(), role.strip(), why.strip()), "Approval recorded.")


def _correction_actions(client: ApiClient, inv: dict) -> None:
    st.subheader("Correct")
    fields_tab, decision_tab = st.tabs(["Correct fields", "Override a decision"])
    current = inv.get("fields") or {}
    with fields_tab, st.form("correct_fields_form"):
        table = pd.DataFrame({"field": list(SCALAR_FIELDS), "value": [current.get(n) for n in SCALAR_FIELDS]})
        # Keyed by invoice: pending edits of one invoice never land on another.
        edited = st.data_editor(table, hide_index=True, disabled=["field"], width="stretch", key=f"correct_{inv['id']}",
                                column_config={"field": "Field", "value": st.column_config.TextColumn("Value")})
        actor, why = _actor_and_reason("fields")
        if st.form_submit_button("Save corrections", type="primary"):
            changed = changed_fields(current, edited)
            if not changed:
                st.warning("No value was changed.")
            elif _ready(actor, why):
                _act(lambda: client.correct(inv["id"], actor, why, fields=changed),
                     f"Corrected {len(changed)} field(s); the checks run again.")
    with decision_tab:
        runs = {s["step"]: s.get("decision") for s in inv.get("steps") or [] if s.get("status") == StepRunStatus.DONE}
        # Only the decisions that apply now: steps the chain reached, not their current decision,
        # never APPROVED past the approvers (the same rule as the review desk's).
        choices = [(step, d) for step, ds in override_options(inv["status"], runs).items() for d in ds]
        if not choices:
            st.caption("No decision can be overridden in this state.")
            return
        with st.form("override_form"):
            choice = st.selectbox("Step and new decision", choices, key="override_choice",
                                  format_func=lambda c: f"{STEP_LABELS[c[0]]} → {c[1]}",
                                  help="The chain continues from the step after it.")
            st.caption("Current: " + ", ".join(f"{STEP_LABELS[str(s)]} {runs.get(str(s)) or '–'}" for s in TOOLCHAIN_STEPS))
            actor, why = _actor_and_reason("override")
            if st.form_submit_button("Override", type="primary") and _ready(actor, why):
                step, decision = choice
                _act(lambda: client.correct(inv["id"], actor, why, decisions={step: decision}),
                     f"{STEP_LABELS[step]} set to {decision}.")


def changed_fields(current: dict, edited: pd.DataFrame) -> dict:
    """The field values a reviewer changed in the editor (an emptied cell means null)."""
    changed = {}
    for name, value in zip(edited["field"], edited["value"]):
        value = None if value is None or pd.isna(value) or not str(value).strip() else str(value).strip()
        if value != current.get(name):
            changed[name] = value
    return changed


def _actor_and_reason(form: str) -> tuple[str, str]:
    left, right = st.columns([1, 2])
    actor = left.text_input("Your name", key=f"{form}_actor")
    why = right.text_input("Reason", key=f"{form}_reason")
    return actor.strip(), why.strip()


def _ready(actor: str, why: str) -> bool:
    if actor and why:
        return True
    st.error("Every correction needs your name and a reason (it goes into the audit trail).")
    return False


# --- Review queue ----------------------------------------------------------------------------


def review_page(client: ApiClient) -> None:
    st.header("Review queue")
    st.caption("Invoices where the model and the rules disagree, or a check needs a person.")
    data = client.review_queue(limit=100)
    if not data["items"]:
        st.success("Nothing waits for review.", icon=":material/done_all:")
        return
    st.markdown(f"**{data['total']}** invoice(s) waiting, oldest first.")
    for inv in data["items"]:
        with st.container(border=True):
            left, right = st.columns([5, 1], vertical_alignment="center")
            concerns = []
            for run in inv.get("steps") or []:
                codes = ", ".join(r.get("code", "") for r in run.get("reasons") or [] if isinstance(r, dict))
                if run.get("agree") is False:
                    concerns.append(f"{STEP_LABELS.get(run['step'], run['step'])}: model and rules disagree ({codes})")
                elif run.get("decision") and DECISION_COLORS.get(run["decision"]) in ("red", "orange"):
                    concerns.append(f"{STEP_LABELS.get(run['step'], run['step'])}: {run['decision']} ({codes})")
            left.markdown(f"**{md(summary_line(inv))}** · waiting since {when(inv['updated_at'])}  \n"
                          + ("  \n".join(md(c) for c in concerns) or "Needs a look."))
            with right:
                open_button(inv["id"], key=f"review_open_{inv['id']}")


# --- Training --------------------------------------------------------------------------------


def training_page(client: ApiClient) -> None:
    st.header("Training")
    st.caption("Fine-tune the extraction or toolchain adapter; a better version is promoted automatically.")
    with st.expander("New training job", expanded=True):
        source = st.radio("Data", ("synthetic", "corrections", "upload"), horizontal=True, key="train_source",
                          format_func={"synthetic": "Synthetic invoices", "corrections": "Reviewers' corrections",
                                       "upload": "Upload JSONL"}.get)
        with st.form("training_form"):
            c1, c2, c3, c4 = st.columns(4)
            adapter = c1.selectbox("Adapter", tuple(AdapterName), key="train_adapter")
            n = c2.number_input("Invoices", min_value=10, max_value=100_000, value=200, step=50, key="train_n",
                                disabled=source != "synthetic")
            seed = c3.number_input("Seed", min_value=0, value=0, step=1, key="train_seed")
            max_steps = c4.number_input("Max steps (0: one epoch)", min_value=0, value=0, step=10, key="train_max_steps")
            upload = (st.file_uploader("Training data (JSONL)", type=["jsonl"], key="train_file", max_upload_size=upload_limit_mb())
                      if source == "upload" else None)
            extra = st.text_input("More parameters (JSON)", value="{}", key="train_extra",
                                  help='Any training parameter, e.g. {"learning_rate": 0.0001, "lora_r": 8}.')
            if st.form_submit_button("Start training", type="primary", icon=":material/model_training:"):
                _start_training(client, source, adapter, int(n), int(seed), int(max_steps), upload, extra)
    auto = st.toggle(f"Auto-refresh every {REFRESH_S} s", key="training_auto_refresh")
    st.fragment(run_every=REFRESH_S if auto else None, key="training_jobs")(guarded(_training_jobs))(client)


def _start_training(client: ApiClient, source: str, adapter: str, n: int, seed: int, max_steps: int, upload, extra: str) -> None:
    try:
        params = json.loads(extra or "{}")
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        st.error(f"More parameters must be a JSON object ({exc}).")
        return
    params = {"seed": seed, **({"max_steps": max_steps} if max_steps else {}), **params}
    if source == "synthetic":
        params.setdefault("n", n)
    if source == "upload" and upload is None:
        st.error("Choose a JSONL file to train on.")
        return
    try:
        if source == "upload":
            job = client.upload_training_data(adapter, upload.name, upload.getvalue(), params)
        else:
            job = client.submit_training_job(adapter, source, params)
    except ApiError as exc:
        say_error(exc.message)
        return
    st.success(f"Training job `{job['id']}` queued.")


def _training_jobs(client: ApiClient) -> None:
    jobs = client.list_training_jobs()
    if not jobs:
        st.info("No training jobs yet.")
        return
    for job in jobs:
        with st.container(border=True):
            head, action = st.columns([5, 1], vertical_alignment="center")
            head.markdown(f"**{md(job['adapter'])}** · {md(job['data_source'])} "
                          f"{badge(job['status'], JOB_COLORS.get(job['status'], 'gray'))}  \n"
                          f"`{job['id']}` · queued {when(job['created_at'])}")
            if job["status"] in (J.QUEUED, J.RUNNING) and action.button("Cancel", key=f"cancel_{job['id']}"):
                try:
                    client.cancel_training_job(job["id"])
                    st.rerun()
                except ApiError as exc:
                    say_error(exc.message)
            progress = job.get("progress") or {}
            step, total = progress.get("step"), progress.get("total_steps")
            if step is not None and total:
                st.progress(min(1.0, step / total), text=f"step {step} of {total} · {progress.get('phase', '')}")
            metrics = job.get("metrics") or {}
            m1, m2, m3 = st.columns(3)
            loss, eval_loss = progress.get("loss", metrics.get("train_loss_last")), progress.get("eval_loss", metrics.get("eval_loss"))
            m1.metric("Loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else "–")
            m2.metric("Eval loss", f"{eval_loss:.4f}" if isinstance(eval_loss, (int, float)) else "–")
            if job.get("adapter_version") is not None:
                promoted = "promoted" if job.get("promoted") else "not promoted"
                m3.metric("Adapter version", f"v{job['adapter_version']}", promoted,
                          delta_color="normal" if job.get("promoted") else "off")
            if job.get("error"):
                say_error(job["error"])


# --- the app ---------------------------------------------------------------------------------

RENDER = {"Inbox": inbox_page, "Invoices": invoices_page, "Invoice detail": detail_page,
          "Review queue": review_page, "Training": training_page}


def main() -> None:
    st.set_page_config(page_title="Invoice Toolchain", page_icon=":material/receipt_long:", layout="wide")
    # Navigation requested by a button on the previous run, or a shared link (?invoice=<id>).
    goto = st.session_state.pop("goto", None)
    if goto is None and "invoice" in st.query_params and "page" not in st.session_state:
        goto = ("Invoice detail", st.query_params["invoice"])
    if goto is not None:
        st.session_state["page"] = goto[0]
        if goto[1]:
            st.session_state["detail_invoice_id"] = goto[1]

    if flash := st.session_state.pop("flash", None):
        st.toast(flash, icon=":material/check:")

    client = ApiClient()
    with st.sidebar:
        st.title(":material/receipt_long: Invoice Toolchain")
        page = st.radio("Go to", PAGES, key="page", label_visibility="collapsed")
        st.divider()
        reachable = health_badge(client)
        st.caption(f"API: {client.base_url}")
    if page != "Invoice detail":
        st.query_params.pop("invoice", None)
    if not reachable:
        st.error(f"The Invoice Toolchain API at {client.base_url} cannot be reached, so nothing can be shown. "
                 "Start it with `invoicechain api`, or point INVOICECHAIN_API_URL at it, then reload.",
                 icon=":material/cloud_off:")
        return
    guarded(RENDER[page])(client)


if __name__ == "__main__":  # `streamlit run` executes the script as __main__
    main()
