"""INFaaS: model-less inference serving (package of the CLI and demo helpers)."""
