"""The Open Inference Protocol's gRPC messages: grpc_service.proto and the code
``make proto`` generates from it (committed)."""
