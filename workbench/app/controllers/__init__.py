"""Plain objects that do a tab's or the app's work (no widgets): the one job, a sweep's start and stop."""
