"""Export: merge adapters at full precision, save HF safetensors or write GGUF + Ollama Modelfile.

The chat template the model was trained with travels with every export (tokenizer files,
`tokenizer.chat_template` in the GGUF, a Go TEMPLATE in the Modelfile), and every export is
reloaded and compared with the merged model before it is put in place (`verify`).
"""

from tunesmith.export.common import ExportError
from tunesmith.export.pipeline import FORMATS, ExportResult, export_model
from tunesmith.export.source import ExportSource, resolve_source

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "ExportSource",
    "export_model",
    "resolve_source",
]
