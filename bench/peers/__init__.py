"""The servers a user would pick instead of ours (TorchServe, Ray Serve), run in bench/peers/Dockerfile's images."""
