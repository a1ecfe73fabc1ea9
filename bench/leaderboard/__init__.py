"""The leaderboard: tables, plots, the site, exports, baselines and checks."""
