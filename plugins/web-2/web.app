%% The axum example's route handlers, version 2: one library module of async functions,
%% no processes.
{application, web,
 [{description, "Route handlers of the axum example service"},
  {vsn, "2"},
  {modules, [web_routes]},
  {applications, []}]}.
