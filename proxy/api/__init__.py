"""The HTTP API dashboards and the viewer call: `app.make_app(context.ApiContext(...))` is all the
process needs. Nothing is imported here, so that a module the API uses (`proxy.exports`) may be
imported first."""
