"""A model's run: drawing cases (:mod:`.strategies`), running and shrinking them
(:mod:`.runner`), time and memory limits (:mod:`.limits`), a process per model
(:mod:`.isolate`), the reports (:mod:`.report`), where models come from (:mod:`.registry`)
and the project's settings (:mod:`.config`)."""
