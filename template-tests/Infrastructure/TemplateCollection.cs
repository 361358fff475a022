using Xunit;

namespace PreforkTemplates.Tests.Infrastructure;

[CollectionDefinition("template")]
public sealed class TemplateCollection : ICollectionFixture<TemplateFixture>;
