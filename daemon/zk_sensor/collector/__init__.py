"""zk-collector: the HTTP service that receives, keeps and shows the fleet's aggregates."""
