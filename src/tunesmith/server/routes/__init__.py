"""The endpoints, one module per OpenAI resource."""
