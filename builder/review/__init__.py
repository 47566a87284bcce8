"""``launch.py review OUT``: a local web page to look at every result, override the filter,
edit captions and compare the sampled epochs (server, card data, thumbnails, static page)."""
