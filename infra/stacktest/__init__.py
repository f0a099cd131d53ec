"""`make stack-test`: the docker-compose stack built and run with podman (__main__)."""
