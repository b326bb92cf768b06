"""Generated content (images, JSON documents) saved from a view so the person never loses
the result: partial-success responses, the end-user messages, gzip JSON documents."""
