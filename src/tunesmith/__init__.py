"""tunesmith: fine-tune LLMs on your own examples and prove the result beats the base model."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# bitsandbytes (imported by peft whenever it is installed) warns on every CPU run that it could
# not download an optional kernel from a hub; tunesmith never downloads at run time, so the
# warning is noise that would hide real messages.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# peft 0.21 calls a transformers method that transformers 5 deprecates; users can do nothing
# about it, so it must not show on every run.
_warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
