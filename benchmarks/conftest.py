"""Nothing under benchmarks/ is a test: keep pytest from collecting it even when pointed here."""

collect_ignore_glob = ["*"]
