"""Workers: the Celery worker, variant-queue consumers, runtimes, builders and the profiler."""
