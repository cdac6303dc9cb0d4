"""Datasets as webdataset shards: the sample format, the streaming loader, the writers, pre-tokenizing, inspection."""
