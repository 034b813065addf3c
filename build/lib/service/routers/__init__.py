"""One router per resource; `service.app.ROUTERS` lists the default ones."""
