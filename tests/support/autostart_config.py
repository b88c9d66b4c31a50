"""A docker-autostart config.json as another site's operator wrote it: entries and keys that are not ours, odd
spacing, a custom field; what merging our entries in, and taking them out again, must keep byte for byte."""

FOREIGN = """{
    "services": {
        "blog.example.test": {"name":"Blog","composeDir":"/opt/blog","proxyPort":9000,"blocking":false,"containers":["blog"]},
        "wiki.example.test": {
            "name": "Wiki",  "composeDir": "/opt/wiki",
            "proxyPort": 9001, "blocking": true, "containers": ["wiki", "wiki-db"], "custom": [1, 2]
        }
    },
    "logLevel": "debug"
}
"""
