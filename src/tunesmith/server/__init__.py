"""The fine-tuning service: OpenAI's files, fine-tuning jobs, models and chat-completions
protocols over tunesmith, so the official `openai` SDK drives it with only `base_url` changed.

app.py builds the FastAPI app from settings (settings.py); auth.py maps API keys to projects;
errors.py puts every error in OpenAI's envelope; schemas.py shapes the objects; routes/ holds
the endpoints. Jobs run in workers (tunesmith.worker) that share the store (tunesmith.store).
"""

from tunesmith.server.app import create_app
from tunesmith.service import ServerSettings

__all__ = ["ServerSettings", "create_app"]
