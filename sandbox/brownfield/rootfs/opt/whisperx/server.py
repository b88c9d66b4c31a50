# the runbook's hand-made WhisperX server (its code is not in the runbook; a placeholder here:
# the brownfield sandbox runs a stand-in image already built under this project's name)
