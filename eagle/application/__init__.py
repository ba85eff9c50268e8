"""User-facing applications (the Gradio web UI)."""
