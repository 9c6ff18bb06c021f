"""Load generation, statistics, cost model and reporting for deployed models."""
