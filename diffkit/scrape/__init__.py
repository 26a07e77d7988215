"""``diffkit scrape``: N unique, valid images from a "random image" URL, politely and resumably."""
