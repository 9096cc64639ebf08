// The review desk: plain JavaScript over the API; every call carries the key kept in sessionStorage.
"use strict";

const KEY = "invoicechain.apiKey";
const LOW_CONFIDENCE = 0.8;
const state = { config: null, timer: null, current: null, page: 1, fieldNames: [], original: {} };
const $ = (sel) => document.querySelector(sel);

function say(text, kind = "ok") {
  const m = $("#message");
  m.textContent = text || "";
  m.className = kind;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: "Bearer " + sessionStorage.getItem(KEY) });
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    showLogin("The API key was not accepted; enter a valid one.");
    throw new Error("unauthorised");
  }
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(detail);
  }
  return resp;
}

function showLogin(text) {
  sessionStorage.removeItem(KEY);
  $("#login").hidden = false;
  $("#desk").hidden = true;
  $("#signout").hidden = true;
  if (text) say(text, "error");
}

async function start() {
  if (!sessionStorage.getItem(KEY)) return showLogin();
  $("#login").hidden = true;
  try {
    state.config = await (await api("/v1/desk/config")).json();
  } catch (e) {
    if (e.message !== "unauthorised") say(e.message, "error");
    return;
  }
  $("#desk").hidden = false;
  $("#signout").hidden = false;
  const status = $("#f-status");
  status.length = 1;
  for (const s of state.config.statuses) status.add(new Option(s.replace(/_/g, " "), s));
  $("#reason-codes").innerHTML = state.config.reasons.map((r) => `<option value="${r}">`).join("");
  $("#upload-limit").textContent = `PDF up to ${(state.config.max_upload_bytes / 1048576).toFixed(0)} MB`;
  await loadList();
  schedule();
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (!$("#auto-refresh").checked) return;
    loadList().catch(() => {});
    if (state.current && !fieldsChanged()) openInvoice(state.current.id, true).catch(() => {});
  }, state.config.refresh_s * 1000);
}

function filterQuery() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters"))) if (String(v).trim()) params.set(k, String(v).trim());
  return params.toString();
}

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function loadList() {
  const page = await (await api("/v1/desk/invoices?limit=200&" + filterQuery())).json();
  $("#count").textContent = `${page.total} invoice${page.total === 1 ? "" : "s"}` + (page.total > page.items.length ? ` (newest ${page.items.length} shown)` : "");
  $("#invoices tbody").innerHTML = page.items.map((r) => `
    <tr data-id="${esc(r.id)}" data-status="${esc(r.status)}">
      <td><span class="badge ${esc(r.status)}">${esc(r.status.replace(/_/g, " "))}</span></td>
      <td>${esc(r.vendor_name)}</td><td>${esc(r.invoice_id)}</td><td>${esc(r.invoice_date)}</td>
      <td class="num">${esc(r.total_amount)} ${esc(r.currency)}</td><td>${esc(r.reasons.join(", "))}</td>
    </tr>`).join("");
}

async function exportCsv() {
  const blob = await (await api("/v1/desk/invoices.csv?" + filterQuery())).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `invoices-${new Date().toISOString().slice(0, 10)}.csv`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

async function upload(ev) {
  ev.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return say("Choose a PDF to upload.", "error");
  if (file.size > state.config.max_upload_bytes) {
    return say(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(state.config.max_upload_bytes / 1048576).toFixed(0)} MB.`, "error");
  }
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const body = await (await api("/v1/invoices", { method: "POST", body: form })).json();
    say(body.duplicate ? `${file.name} was uploaded before: invoice ${body.id}.` : `Uploaded ${file.name}: invoice ${body.id}.`);
    $("#upload-form").reset();
    await loadList();
  } catch (e) {
    if (e.message !== "unauthorised") say(`Upload failed: ${e.message}`, "error");
  }
}

// --- one invoice -----------------------------------------------------------------------

function flatFields(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields || {})) {
    if (k === "line_items") continue;
    if (k === "bank") {
      for (const [b, bv] of Object.entries(v || { iban: null, bic: null, account_number: null, routing_number: null })) out[`bank.${b}`] = bv;
    } else out[k] = v;
  }
  return out;
}

function fieldsChanged() {
  return Object.keys(changedFields()).length > 0;
}

function changedFields() {
  const out = {};
  for (const input of document.querySelectorAll("#fields input")) {
    const name = input.dataset.field;
    const before = state.original[name] ?? "";
    if (input.value !== String(before)) out[name] = input.value.trim() === "" ? null : input.value.trim();
  }
  return out;
}

async function openInvoice(id, quiet = false) {
  const inv = await (await api(`/v1/desk/invoices/${encodeURIComponent(id)}`)).json();
  const same = state.current && state.current.id === inv.id;
  if (same && quiet && state.current.updated_at === inv.updated_at) return;
  state.current = inv;
  if (!same) state.page = 1;
  $("#detail").hidden = false;
  $("#d-title").textContent = `${inv.fields?.vendor_name ?? inv.filename ?? ""} ${inv.fields?.invoice_id ?? ""}`.trim() || inv.id;
  $("#d-status").textContent = inv.status.replace(/_/g, " ");
  $("#d-status").className = `badge ${inv.status}`;
  $("#detail").dataset.status = inv.status;
  $("#detail").dataset.id = inv.id;
  $("#d-error").textContent = inv.error || "";
  renderFields(inv);
  renderActions(inv);
  renderDocument(inv);
  $("#steps").innerHTML = inv.steps.map((s) => `<li data-step="${esc(s.step)}"><b>${esc(s.step)}</b>: ${esc(s.decision ?? s.status)}
     ${esc((s.reasons || []).map((r) => r.code || r).join(", "))}</li>`).join("");
  $("#trail").innerHTML = inv.trail.length ? inv.trail.map((t) => `<li class="trail-${esc(t.action)}">${esc(t.at.slice(0, 19).replace("T", " "))}
     <b>${esc(t.actor)}</b> ${esc(t.action.replace(/_/g, " "))}${t.step ? " (" + esc(t.step) + ")" : ""}${t.reason ? ": " + esc(t.reason) : ""}</li>`).join("")
    : "<li>No one has acted on this invoice yet.</li>";
  const pay = $("#payment");
  pay.hidden = !inv.payment;
  if (inv.payment) pay.textContent = `Payment batch #${inv.payment.batch_id}: ${inv.payment.amount} ${inv.payment.currency} to ${inv.payment.creditor_name} on ${inv.payment.pay_on}`;
}

function renderFields(inv) {
  state.original = flatFields(inv.fields);
  state.fieldNames = Object.keys(state.original);
  const editable = inv.actions.correct;
  const rows = state.fieldNames.map((name) => {
    const conf = inv.confidence ? inv.confidence[name.split(".")[0]] : undefined;
    const confText = conf === undefined || conf === null ? "" : `<span class="conf ${conf < LOW_CONFIDENCE ? "low" : ""}">${Math.round(conf * 100)}%</span>`;
    const found = inv.boxes[name] ? "" : " title=\"not found on the page\"";
    return `<tr data-field="${esc(name)}"><th><label for="fld-${esc(name)}"${found}>${esc(name.replace(/_/g, " "))}</label> ${confText}</th>
      <td><input id="fld-${esc(name)}" data-field="${esc(name)}" value="${esc(state.original[name])}" ${editable ? "" : "readonly"}></td></tr>`;
  });
  const items = (inv.fields?.line_items || []).length;
  if (items) rows.push(`<tr><th>line items</th><td>${items}</td></tr>`);
  $("#fields tbody").innerHTML = rows.join("");
  $("#save").disabled = true;
}

function renderActions(inv) {
  const a = inv.actions;
  $("#save").hidden = !a.correct;
  $("#confirm").hidden = !a.confirm;
  $("#approve").hidden = !a.approve;
  $("#reject").hidden = !a.reject;
  const steps = Object.keys(a.overrides || {});
  $("#override-form").hidden = steps.length === 0;
  const stepSel = $("#ov-step");
  stepSel.length = 0;
  for (const s of steps) stepSel.add(new Option(s.replace(/_/g, " "), s));
  fillDecisions();
}

function fillDecisions() {
  const sel = $("#ov-decision");
  sel.length = 0;
  const choices = (state.current?.actions.overrides || {})[$("#ov-step").value] || [];
  for (const d of choices) sel.add(new Option(d, d));
}

async function renderDocument(inv) {
  const img = $("#page-img");
  $("#page").hidden = !inv.is_pdf;
  $("#page-nav").hidden = !inv.is_pdf || inv.page_count < 2;
  $("#doc-text").hidden = inv.is_pdf;
  if (!inv.is_pdf) {
    renderText(inv);
    return;
  }
  $("#page-no").textContent = `page ${state.page} of ${inv.page_count}`;
  const blob = await (await api(`/v1/desk/invoices/${inv.id}/pages/${state.page}.png`)).blob();
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  await img.decode().catch(() => {});
  drawBoxes(inv);
}

function drawBoxes(inv) {
  const page = $("#page");
  page.querySelectorAll(".hl").forEach((el) => el.remove());
  for (const [name, boxes] of Object.entries(inv.boxes)) {
    for (const b of boxes) {
      if (b.page !== state.page) continue;
      const el = document.createElement("div");
      el.className = "hl";
      el.dataset.field = name;
      el.style.left = `${b.x0 * 100}%`;
      el.style.top = `${b.top * 100}%`;
      el.style.width = `${(b.x1 - b.x0) * 100}%`;
      el.style.height = `${(b.bottom - b.top) * 100}%`;
      page.appendChild(el);
    }
  }
  markActive(document.activeElement?.dataset?.field);
}

function renderText(inv) {
  const text = inv.text || "";
  const spans = Object.entries(inv.spans).sort((a, b) => a[1][0] - b[1][0]);
  let html = "", at = 0;
  for (const [name, [s, e]] of spans) {
    if (s < at) continue;
    html += esc(text.slice(at, s)) + `<mark data-field="${esc(name)}">${esc(text.slice(s, e))}</mark>`;
    at = e;
  }
  $("#doc-text").innerHTML = html + esc(text.slice(at));
}

function markActive(name) {
  document.querySelectorAll(".hl, mark, #fields tr").forEach((el) => el.classList.toggle("active", !!name && el.dataset.field === name));
  const first = name && document.querySelector(`.hl[data-field="${CSS.escape(name)}"]`);
  if (first && first.page !== state.page) { /* boxes on other pages are drawn when that page shows */ }
}

function moveFocus(from, delta) {
  const inputs = [...document.querySelectorAll("#fields input")];
  const i = inputs.indexOf(from);
  const next = inputs[Math.min(inputs.length - 1, Math.max(0, i + delta))];
  if (next) { next.focus(); next.select(); }
}

async function act(call, done) {
  try {
    await call();
    say(done);
    await openInvoice(state.current.id);
    await loadList();
  } catch (e) {
    if (e.message !== "unauthorised") say(e.message, "error");
  }
}

function reason(fallback) {
  return $("#act-reason").value.trim() || fallback;
}

function correctionBody() {
  const changed = changedFields();
  const fields = {};
  for (const [name, value] of Object.entries(changed)) {
    if (name.startsWith("bank.")) {
      fields.bank = fields.bank || Object.assign({ iban: null, bic: null, account_number: null, routing_number: null }, state.current.fields.bank || {});
      fields.bank[name.slice(5)] = value;
    } else fields[name] = value;
  }
  return fields;
}

function saveCorrections() {
  const fields = correctionBody();
  if (!Object.keys(fields).length) return say("Nothing changed.", "error");
  return act(() => api(`/v1/invoices/${state.current.id}`, { method: "PATCH", json: { actor: "desk", reason: reason("corrected at the review desk"), fields } }),
    `Saved: ${Object.keys(fields).join(", ")}. The invoice is checked again.`);
}

function wire() {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#key").value = "";
    say("");
    start();
  });
  $("#signout").addEventListener("click", () => { clearInterval(state.timer); showLogin("Key forgotten."); });
  $("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadList().catch((e) => say(e.message, "error")); });
  $("#export").addEventListener("click", () => exportCsv().catch((e) => say(e.message, "error")));
  $("#auto-refresh").addEventListener("change", schedule);
  $("#upload-form").addEventListener("submit", upload);
  $("#invoices tbody").addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (tr) openInvoice(tr.dataset.id).catch((e) => say(e.message, "error"));
  });
  const fields = $("#fields");
  fields.addEventListener("focusin", (ev) => markActive(ev.target.dataset.field));
  fields.addEventListener("input", (ev) => {
    ev.target.classList.toggle("changed", ev.target.value !== String(state.original[ev.target.dataset.field] ?? ""));
    $("#save").disabled = !fieldsChanged();
  });
  fields.addEventListener("keydown", (ev) => {
    const input = ev.target;
    if (input.tagName !== "INPUT") return;
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); saveCorrections(); }
    else if (ev.key === "ArrowDown" || ev.key === "Enter") { ev.preventDefault(); moveFocus(input, 1); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); moveFocus(input, -1); }
    else if (ev.key === "Escape") {
      input.value = state.original[input.dataset.field] ?? "";
      input.classList.remove("changed");
      $("#save").disabled = !fieldsChanged();
    }
  });
  $("#save").addEventListener("click", saveCorrections);
  $("#confirm").addEventListener("click", () => act(
    () => api(`/v1/desk/invoices/${state.current.id}/confirm`, { method: "POST", json: { reason: reason("fields checked against the document") } }),
    "Fields confirmed; the invoice is checked again."));
  $("#approve").addEventListener("click", () => act(
    () => api(`/v1/invoices/${state.current.id}/approve`, { method: "POST", json: { approver: "desk", reason: $("#act-reason").value.trim() || null } }),
    "Approval recorded."));
  $("#reject").addEventListener("click", () => {
    const why = $("#act-reason").value.trim();
    if (!why) return say("Say why the invoice is rejected (Reason).", "error");
    return act(() => api(`/v1/invoices/${state.current.id}/reject`, { method: "POST", json: { approver: "desk", reason: why } }), "Invoice rejected.");
  });
  $("#ov-step").addEventListener("change", fillDecisions);
  $("#override-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const step = $("#ov-step").value, decision = $("#ov-decision").value;
    act(() => api(`/v1/invoices/${state.current.id}`, { method: "PATCH", json: { actor: "desk", reason: reason("overridden at the review desk"), decisions: { [step]: decision } } }),
      `${step} set to ${decision}.`);
  });
  $("#prev-page").addEventListener("click", () => { if (state.page > 1) { state.page--; renderDocument(state.current); } });
  $("#next-page").addEventListener("click", () => { if (state.page < state.current.page_count) { state.page++; renderDocument(state.current); } });
  $("#close").addEventListener("click", () => { $("#detail").hidden = true; state.current = null; });
}

wire();
start();
