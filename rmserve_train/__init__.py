"""Reward models in, quality out: train (Bradley-Terry), evaluate and calibrate stored models.

Offline work around the server: everything is scored the way `rmserve serve` scores it, with
its formatter and PyTorch backend in-process, or through a running server.
"""
