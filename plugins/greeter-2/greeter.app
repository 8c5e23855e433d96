%% The greeter library application, version 2: one library module, no processes.
{application, greeter,
 [{description, "Example library application: a typed Greeter interface"},
  {vsn, "2"},
  {modules, [greeter]},
  {applications, []}]}.
