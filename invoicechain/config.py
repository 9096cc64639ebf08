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

from invoicechain.schema import ANSWER_TOKENS

DecisionMode = Literal["rules", "model", "guarded"]


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
    api_token: str | None = Field(None, description="When set, write routes need 'Authorization: Bearer <token>'.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI and the UI reach the API.")

    # --- models --------------------------------------------------------------------
    model_store: Path | None = Field(None, description="Base models and adapters; default data_dir/models.")
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
        "only under another number's label is dropped (`models.reconcile`); each change is recorded with the "
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

    @model_validator(mode="after")
    def _shipped_adapters(self) -> Settings:
        # Resolved at load time: a worker started from another folder still finds them.
        if self.adapters_dir is None:
            self.adapters_dir = PROJECT_ROOT / "adapters"
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


@lru_cache
def get_settings() -> Settings:
    return Settings()
