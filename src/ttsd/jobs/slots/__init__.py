"""Engine slots as processes that only speak: the pool both runners put their engines in (the
embedded queue in the API process, the distributed worker in its Celery process)."""
