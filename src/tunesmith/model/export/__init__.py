"""Export a trained model: the PEFT adapter, merged Hugging Face weights, or GGUF with an
Ollama Modelfile, each checked for parity with the trained model (docs/export.md)."""

from tunesmith.model.export.errors import ExportError, ParityError
from tunesmith.model.export.exporter import DTYPES, FORMATS, ExportResult, export_model, verify_export

__all__ = ["DTYPES", "FORMATS", "ExportError", "ExportResult", "ParityError", "export_model", "verify_export"]
