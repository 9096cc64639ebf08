"""One settings object for the whole system, read from the environment and `.env`.

Every variable is documented in the README ("Configuration"). Variables use the
`INVOICECHAIN_` prefix, except `DATABASE_URL` and `REDIS_URL`, which are also accepted
bare because every hosting platform sets them that way.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from invoicechain.decisions import Step
from invoicechain.enums import AdapterName, OcrEngine
from invoicechain.schema import ANSWER_TOKENS

DecisionMode = Literal["rules", "model", "guarded"]
#: The toolchain steps and the settings that hold their decision modes.
TOOLCHAIN_MODE_SETTINGS = {Step.VALIDATE: "validate_mode", Step.MATCH_PO: "match_po_mode",
                           Step.APPROVAL: "approval_mode", Step.PAYMENT: "payment_mode"}

#: Confidence below which a required field sends the invoice to review (see docs/workspace.md).
REVIEW_CONFIDENCE_DEFAULTS: dict[str, float] = {
    "default": 0.5, "invoice_id": 0.5, "vendor_name": 0.5, "invoice_date": 0.5, "total_amount": 0.5, "currency": 0.5,
}


#: The project folder of the installed code (it holds the shipped `adapters/`).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INVOICECHAIN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- storage -------------------------------------------------------------------
    data_dir: Path = Field(Path(".data"), description="Documents, embedded broker, SQLite file.")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("INVOICECHAIN_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; unset means SQLite in data_dir (the embedded default).",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("INVOICECHAIN_REDIS_URL", "REDIS_URL"),
        description="Broker and result backend; unset means kombu's filesystem transport.",
    )

    # --- API -----------------------------------------------------------------------
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest accepted upload; over it the API answers 413.")
    api_token: str | None = Field(
        None,
        validation_alias=AliasChoices("INVOICECHAIN_API_KEY", "INVOICECHAIN_API_TOKEN"),
        description="The API key the CLI and the UI send; the API also accepts it as an admin key "
        "(owner `api_key_owner`). Keys made with `invoicechain keys create` are stored hashed in the database.",
    )
    api_key_owner: str = Field("admin", max_length=200, description="Identity recorded for actions taken with INVOICECHAIN_API_KEY.")
    api_key_cache_s: float = Field(
        1.0, ge=0, le=60, description="Seconds an API process reuses a key it verified before asking the database again: a key "
        "revoked by another process (`invoicechain keys revoke`) is refused within this time, one revoked in the same process at once; 0: every request asks.",
    )
    api_access_log: bool = Field(False, description="uvicorn's access log, one line per request (off: the API logs warnings and errors only).")
    api_key_role: str | None = Field("controller", description="Approver role of INVOICECHAIN_API_KEY's owner.")
    dev_allow_no_key: bool = Field(
        False, description="Development only: `invoicechain api` starts although no API key is configured (routes still need a key from the database)."
    )
    docs_access: Literal["public", "key", "off"] = Field(
        "key", description="/docs, /redoc and /openapi.json: open, behind a `read` key, or not served."
    )
    metrics_access: Literal["public", "key", "off"] = Field(
        "key", description="/metrics: open (for a scraper on a private network), behind a `read` key, or not served."
    )
    flower_basic_auth: str | None = Field(
        None, description="`user:password` Flower asks for (`invoicechain flower` refuses to start without it unless dev_allow_no_key)."
    )
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI and the UI reach the API.")
    desk_refresh_s: float = Field(10.0, gt=0, description="How often the review desk (/desk) reloads the invoice list, in seconds.")

    # --- models --------------------------------------------------------------------
    model_store: Path | None = Field(None, description="Base models and adapters; default data_dir/models.")
    vendor_memory_file: Path | None = Field(
        None,
        description="Per-vendor memories learned from corrections (`invoicechain corrections vendors`), "
        "applied to every extraction; default data_dir/vendor-memory.json.",
    )
    base_model: str = Field(
        "smollm2-135m",
        description="Name of a provisioned base in the model store, or a path to a local HF causal-LM folder.",
    )
    adapters_dir: Path | None = Field(
        None,
        description="Default adapters shipped with the code; unset: the `adapters/` folder of the installed project, whatever the working directory.",
    )
    torch_threads: int | None = Field(
        None, gt=0, description="CPU threads of the model runtime (torch.set_num_threads); unset: torch's default, one per core."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where models run: CUDA when present, else CPU.")
    grounded_decoding: bool = Field(
        True,
        description="Extraction writes amounts, dates and currencies only as values the document prints "
        "or signs, and names, numbers and descriptions only as whole words of its text.",
    )
    reconcile_amounts: bool = Field(
        True,
        description="An extracted answer whose line items or totals do not add up is corrected when exactly "
        "one number printed where the value belongs makes them add up, and an invoice or PO number printed "
        "only under another number's label is dropped (`extraction.reconcile`); each change is recorded with the "
        "extract step.",
    )
    max_new_tokens: int = Field(
        ANSWER_TOKENS, gt=0,
        description="Token budget of one extraction answer (room for 60 line items).",
    )
    max_input_tokens: int = Field(
        3072, gt=0,
        description="Longest document window given to the model, in tokens (longer text is windowed); twice "
        "the longest training record, so that a two-page invoice is read whole.",
    )
    merged_decoding: bool = Field(
        True,
        description="A batch served by one adapter runs on weights merged with it (built once per adapter "
        "version, one extra copy of the adapted layers in memory); mixed batches use peft's adapter_names.",
    )
    extract_batch_size: int = Field(16, gt=0, description="Most documents decoded together by the extract worker.")
    extract_batch_wait_s: float = Field(0.5, ge=0, description="Longest wait for an extract batch to fill.")
    adapter_poll_s: float = Field(5.0, description="How often a worker checks the registry for a newly promoted adapter.")

    # --- toolchain -----------------------------------------------------------------
    validate_mode: DecisionMode = Field("rules", description="validate_invoice: rules, model or guarded.")
    match_po_mode: DecisionMode = Field("rules", description="match_po: rules, model or guarded.")
    approval_mode: DecisionMode = Field("rules", description="run_approval: rules, model or guarded.")
    payment_mode: DecisionMode = Field("rules", description="trigger_payment: rules, model or guarded.")
    toolchain_min_agreement: float = Field(
        0.95, ge=0, le=1,
        description="Modes `model` and `guarded` are refused for a step until the toolchain adapter's recorded "
        "agreement with the rules on held-out cases (`agreement_with_rules` in its metrics.json) reaches this.",
    )
    approval_policy: Path | None = Field(None, description="YAML approval policy; default the packaged one.")
    price_tolerance: float = Field(0.02, description="Relative unit-price tolerance for PO matching.")
    quantity_tolerance: float = Field(0.0, description="Relative quantity tolerance against PO and receipts.")
    amount_tolerance: float = Field(0.01, description="Absolute tolerance for invoice arithmetic.")

    # --- payments ------------------------------------------------------------------
    payer_name: str = Field("Invoice Toolchain Buyer", description="Debtor name on exported payment files.")
    payer_iban: str | None = Field(None, description="Debtor IBAN for pain.001 export (EUR SEPA batches).")
    payer_bic: str | None = Field(None, description="Debtor BIC for pain.001 export.")

    # --- Celery --------------------------------------------------------------------
    task_soft_time_limit_s: int = Field(300, gt=0, description="Soft time limit of a pipeline task (it then fails with a reason).")
    task_time_limit_s: int = Field(360, gt=0, description="Hard time limit of a pipeline task.")
    extract_time_per_doc_s: int = Field(
        120, ge=0,
        description="Time an extract batch gets per document on top of the task limits (a batch of N "
        "documents has soft limit task_soft_time_limit_s + N x this).",
    )
    training_time_limit_s: int = Field(6 * 3600, gt=0, description="Hard time limit of a training job.")
    worker_concurrency: int = Field(2, gt=0, description="Default worker processes for `invoicechain worker`.")

    # --- recovery ------------------------------------------------------------------
    extract_visibility_timeout_s: int | None = Field(
        None, gt=0,
        description="Seconds before Redis hands an unacknowledged extract message to another worker (a worker "
        "killed mid-batch); unset: the hard limit of a full batch plus 60 s.",
    )
    toolchain_visibility_timeout_s: int | None = Field(
        None, gt=0,
        description="The same for the ingest and toolchain queues; unset: task_time_limit_s plus 60 s.",
    )
    unacked_restore_interval_s: int = Field(
        10, gt=0, description="How often a worker looks for messages whose visibility timeout has passed."
    )
    max_step_attempts: int = Field(
        3, ge=1,
        description="Starts of one step of one invoice that may end without finishing (a worker crash); the next "
        "start fails the invoice with reason worker_crashed and puts it on the dead-letter list.",
    )
    task_sent_events: bool = Field(
        False, description="Publish a `task-sent` event for every task sent (Flower then lists tasks still waiting in "
        "the queue); off, Flower shows each task from its `task-received` event on, and every step costs one Redis publish less.",
    )
    reaper_interval_s: int = Field(60, gt=0, description="How often the beat reaper looks for invoices stuck in a running step.")
    received_deadline_s: int = Field(
        300, gt=0, description="An invoice still `received` (never picked up) this long after its last change is sent again by the reaper."
    )
    crash_marker: str | None = Field(
        None,
        description="Fault injection for recovery drills: a worker whose document text contains this string exits "
        "at once, as if killed. Never set in production.",
    )

    # --- learning loop -------------------------------------------------------------
    promotion_margin: float = Field(
        0.005, ge=0, le=1,
        description="A candidate adapter is promoted only if its field exact match on the evaluation set beats "
        "the active version's, on the same documents, by at least this much.",
    )
    promotion_field_tolerance: float = Field(
        0.02, ge=0, le=1,
        description="...and no single field's exact match drops by more than this (a share, 0.02 = 2 points).",
    )
    promotion_eval_documents: int = Field(
        100, ge=1,
        description="Documents of the evaluation set a training job scores its candidate on (a fixed subset, "
        "compared with the active version on the same documents).",
    )
    training_min_rows: int = Field(8, ge=1, description="Fewest records a training dataset may hold.")
    training_max_steps: int = Field(20_000, ge=1, description="Largest max_steps a training job may ask for.")
    training_max_epochs: float = Field(20.0, gt=0, description="Largest number of epochs a training job may ask for.")
    training_max_learning_rate: float = Field(0.01, gt=0, description="Largest learning rate a training job may ask for.")

    # --- review routing and onboarding ----------------------------------------------
    review_confidence: dict[str, float] = Field(
        default_factory=lambda: dict(REVIEW_CONFIDENCE_DEFAULTS),
        description="Per required field: below this extraction confidence (lowest token probability) the invoice goes to needs_review. JSON object; fields not named use 'default'.",
    )
    review_on_ungrounded: bool = Field(True, description="needs_review when a required field's value is not found in the document.")
    review_on_reconciled: bool = Field(True, description="needs_review when the reconciliation rules changed a required field the model read.")
    unknown_vendor_review: bool = Field(True, description="An invoice whose only problem is an unknown vendor goes to needs_review (create the vendor there), not invalid.")
    rerun_after_import: bool = Field(True, description="Re-run the invoices waiting for master data after every master-data import.")

    # --- inbox: mailboxes, drop folders, backpressure ----------------------------------
    mailboxes: list[dict] = Field(
        default_factory=list,
        description="IMAP mailboxes polled for invoices. JSON list of objects: name, host, port (993), user, password, "
        "ssl (true), starttls (false), folder (INBOX), done_folder (unset: flag \\Seen and $Processed instead of moving), "
        "quarantine_folder (Quarantine).",
    )
    mail_poll_interval_s: float = Field(30.0, gt=0, description="How often Celery beat polls each mailbox.")
    mail_batch: int = Field(200, ge=1, description="Most mails one poll of one mailbox takes.")
    mail_max_attachments: int = Field(50, ge=1, description="A mail with more usable attachments than this is quarantined whole (a mail bomb).")
    mail_max_bytes: int = Field(60 * 1024 * 1024, gt=0, description="A mail larger than this is quarantined unread.")
    mail_claim_lease_s: float = Field(600.0, gt=0, description="A mail claimed by a poller that died is taken over after this many seconds.")
    watch_stable_s: float = Field(2.0, ge=0, description="A dropped file is taken once its size and time have not changed for this long.")
    extract_queue_limit: int = Field(
        2000, ge=0, description="Backpressure: with more extract requests waiting than this, uploads answer 429 and pollers pause (0: no limit)."
    )
    backpressure_retry_after_s: int = Field(30, ge=1, description="Retry-After (seconds) of a 429 answered under backpressure.")

    # --- OCR: scans and photos (docs/ocr.md) ----------------------------------------------
    ocr_enabled: bool = Field(True, description="Read scanned PDFs and PNG/JPEG/TIFF uploads with OCR (off: they end needs_ocr).")
    ocr_max_pages: int = Field(20, ge=1, description="A scan with more pages than this is not read (needs_ocr, OCR_TOO_MANY_PAGES).")
    ocr_time_limit_s: float = Field(300.0, gt=0, description="OCR of one document stops after this many seconds (needs_ocr, OCR_TIME_LIMIT).")
    ocr_dpi: int = Field(200, ge=72, le=600, description="Resolution scanned PDF pages are rendered at for OCR.")
    ocr_min_confidence: float = Field(0.5, ge=0, le=1, description="A page whose mean OCR confidence is below this counts as unreadable.")
    ocr_max_pixels: int = Field(60_000_000, gt=0, description="Largest image (width x height) OCR opens; larger ones are refused as a decompression bomb.")
    ocr_engine: OcrEngine = Field(
        OcrEngine.TESSERACT,
        description="OCR engine: tesseract (Latin alphabets with their accents, umlauts and currency signs) or "
        "rapidocr-onnxruntime (used when Tesseract is not installed).",
    )
    ocr_languages: str = Field(
        "deu+eng+fra+spa+ita",
        description="Tesseract language packs to read with, '+'-separated (those not installed are skipped).",
    )

    @model_validator(mode="after")
    def _shipped_adapters(self) -> Settings:
        # Resolved at load time: a worker started from another folder still finds them.
        if self.adapters_dir is None:
            self.adapters_dir = PROJECT_ROOT / "adapters"
        return self

    @model_validator(mode="after")
    def _toolchain_modes_earned(self) -> Settings:
        """A step decided (`model`) or proposed (`guarded`) by the toolchain adapter only where the
        adapter's recorded agreement with the rules reaches `toolchain_min_agreement`."""
        import json

        asked = {step: mode for step, mode in TOOLCHAIN_MODE_SETTINGS.items() if getattr(self, mode) != "rules"}
        if not asked:
            return self
        path = Path(self.adapters_dir) / AdapterName.TOOLCHAIN / "metrics.json"
        recorded = (json.loads(path.read_text()) if path.is_file() else {}).get("agreement_with_rules") or {}
        short = {step: recorded.get(step) for step in asked
                 if not isinstance(recorded.get(step), (int, float)) or recorded[step] < self.toolchain_min_agreement}
        if short:
            detail = "; ".join(f"{asked[step]}={getattr(self, asked[step])}: "
                               + ("no recorded agreement" if value is None else f"agrees on {value:.1%}")
                               for step, value in short.items())
            raise ValueError(f"the toolchain adapter has not earned these modes ({detail}; needs "
                             f"{self.toolchain_min_agreement:.0%} agreement with the rules on held-out cases, "
                             f"recorded in {path}); use rules")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common libpq-style scheme and route it to psycopg 3.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'invoicechain.db').resolve()}"

    def extract_time_limits(self, documents: int) -> tuple[int, int]:
        """(soft, hard) time limit of an extract batch of `documents` documents."""
        extra = self.extract_time_per_doc_s * max(1, documents)
        return self.task_soft_time_limit_s + extra, self.task_time_limit_s + extra

    @property
    def embedded(self) -> bool:
        """True when no broker service is configured: the filesystem transport is used."""
        return not self.redis_url

    @property
    def documents_dir(self) -> Path:
        return self.data_dir / "documents"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def resolved_model_store(self) -> Path:
        return self.model_store or (self.data_dir / "models")

    @property
    def resolved_vendor_memory_file(self) -> Path:
        return self.vendor_memory_file or (self.data_dir / "vendor-memory.json")


@lru_cache
def get_settings() -> Settings:
    return Settings()
