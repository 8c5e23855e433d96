%% The service example, version 2: a line-protocol counter service whose request
%% handler is the gen_server svc_handler, supervised by svc_sup.
{application, svc,
 [{description, "Counter service behind a TCP front end"},
  {vsn, "2"},
  {modules, [svc_app, svc_sup, svc_handler]},
  {applications, []},
  {mod, {svc_app, []}},
  %% Across a host restart (restart_new_emulator, ctl restart) svc_handler hands its
  %% counters to its successor in the new process.
  {env, [{hotcode_handover, [svc_handler]}]}]}.
