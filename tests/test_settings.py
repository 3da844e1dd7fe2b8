import pytest
from pydantic import ValidationError

from workers.core.settings import DEFAULT_JWT_SECRET, Settings


def test_env_prefix_and_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVOICE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEDVOICE_DATABASE_URL", raising=False)
    monkeypatch.delenv("MEDVOICE_MODELS_DIR", raising=False)
    monkeypatch.setenv("MEDVOICE_LLM_THREADS", "3")
    s = Settings()
    assert s.llm_threads == 3
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'medvoice.db').resolve()}"
    assert s.model_root == tmp_path / "models"


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDVOICE_JWT_ISSUER", raising=False)
    (tmp_path / ".env").write_text("MEDVOICE_JWT_ISSUER=clinic-north\n")
    assert Settings().jwt_issuer == "clinic-north"


def test_production_refuses_default_secret(monkeypatch):
    monkeypatch.delenv("MEDVOICE_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="development secret"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(env="production", jwt_secret="short")
    assert Settings(env="production", jwt_secret="x" * 40).env == "production"
    assert Settings(env="development").jwt_secret == DEFAULT_JWT_SECRET


def test_invalid_values_are_rejected():
    with pytest.raises(ValidationError):
        Settings(asr_concurrency=0)
    with pytest.raises(ValidationError):
        Settings(env="staging")
