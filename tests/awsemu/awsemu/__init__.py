"""awsemu: the project's AWS emulator (moto 5.2.5, patched to behave like AWS for ECS, EC2 and
Cloud Map, with fault injection, task lifecycle control and a task metadata endpoint v4).
Start it with tests/awsemu/run; tests/awsemu/README.md documents every endpoint."""
