"""The HTTP doors: the Litestar app and its routes, the guard in front of them, the OpenAI-compatible
model, the MCP server, error answers and the widget."""
