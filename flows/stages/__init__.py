"""One Prefect subflow per stage; each returns a StageOutcome and never moves traffic back itself
(the promotion flow owns rollback, so that the state machine stays in one file)."""
