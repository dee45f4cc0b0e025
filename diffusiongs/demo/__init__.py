"""The web demo (``diffusiongs demo``).

Modules:
    runner   one image -> the files the page shows (no web code; testable without gradio)
    app      the gradio page over a runner
"""
