"""Notifications about incidents, sent by the server (docs/notifications.md).

channels.py config -> Channel; rules.py when and to whom (pure); summary.py / render.py what each kind
receives (pure); outbox.py the durable queue in the server's database; deliver.py HTTP/SMTP and what an
answer means; service.py the delivery loop; cli.py `floodwatch server notify ...`.
"""
