"""The Textual workbench: presets, jobs, live charts, results. Never does tensor maths."""
