%% The service example, version 1: a line-protocol counter service whose request
%% handler is the gen_server svc_handler, supervised by svc_sup.
{application, svc,
 [{description, "Counter service behind a TCP front end"},
  {vsn, "1"},
  {modules, [svc_app, svc_sup, svc_handler]},
  {applications, []},
  {mod, {svc_app, []}}]}.
